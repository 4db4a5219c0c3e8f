"""Codec quality: SI-SNR and log-mel distance per number of quantizers, and the bitrate.

Log-mel MAE uses 80 mels, n_fft 1024, hop 256 and log10 (the figures quoted for Opus/Vorbis/MP3 in
issue 6 use the same), on the codec's own sample rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..audio import MelSpectrogram


def si_snr(estimate: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor, eps: float = 1e-8) -> float:
    """Scale-invariant SNR in dB (Le Roux et al. 2019) of two 1-D signals (trimmed to equal length)."""
    est = np.asarray(estimate, dtype=np.float64).ravel()
    ref = np.asarray(reference, dtype=np.float64).ravel()
    n = min(len(est), len(ref))
    est, ref = est[:n] - est[:n].mean(), ref[:n] - ref[:n].mean()
    target = (est @ ref) / (ref @ ref + eps) * ref
    noise = est - target
    return float(10 * np.log10((target @ target + eps) / (noise @ noise + eps)))


def log_mel_mae(estimate: torch.Tensor, reference: torch.Tensor, *, sample_rate: int) -> float:
    """Mean |log10 mel(est) - log10 mel(ref)| with 80 mels, n_fft 1024, hop 256."""
    mel = MelSpectrogram(sample_rate=sample_rate, n_fft=1024, hop_length=256, n_mels=80, power=1.0)
    n = min(estimate.shape[-1], reference.shape[-1])
    a = mel(estimate.reshape(1, -1)[:, :n].float())
    b = mel(reference.reshape(1, -1)[:, :n].float())
    return float((torch.log10(a + 1e-5) - torch.log10(b + 1e-5)).abs().mean())


@torch.no_grad()
def evaluate_codec(codec: Any, wavs: list[torch.Tensor], *, levels: list[int] | None = None) -> dict[str, Any]:
    """``wavs``: mono ``[S]`` clips at ``codec.sample_rate``. Mean SI-SNR / log-mel MAE per level count."""
    codec.eval()
    levels = levels or sorted({1, max(1, codec.num_quantizers // 2), codec.num_quantizers})
    out: dict[str, Any] = {"clips": len(wavs), "per_levels": {}}
    for q in levels:
        snrs, maes = [], []
        for wav in wavs:
            codes = codec.encode(wav.reshape(1, 1, -1))[:, :q]
            recon = codec.decode(codes)[0, 0, : wav.shape[-1]]
            snrs.append(si_snr(recon.numpy(), wav.numpy()))
            maes.append(log_mel_mae(recon, wav, sample_rate=codec.sample_rate))
        out["per_levels"][str(q)] = {
            "bitrate_kbps": round(codec.bitrate(q) / 1000, 3) if hasattr(codec, "bitrate") else None,
            "si_snr_db": round(float(np.mean(snrs)), 3),
            "log_mel_mae": round(float(np.mean(maes)), 4),
        }
    return out
