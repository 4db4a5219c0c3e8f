"""Codec quality: SI-SNR and log-mel distance per number of quantizers, and the bitrate, beside
the classic codecs (Opus, Vorbis, MP3 through libsndfile) measured the same way on the same clips.

Log-mel MAE uses 80 mels, n_fft 1024, hop 256 and log10 (the figures quoted for Opus/Vorbis/MP3 in
issue 6 use the same), on the codec's own sample rate. SI-SNR is measured after aligning each
reconstruction to its reference at the lag of maximum cross-correlation (within ``max_lag``
samples): codecs delay the signal (a causal codec by its look-back, MP3 by its encoder delay), and
a delay is not a distortion. Every codec, ours included, goes through the same alignment.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import soundfile as sf
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


def align(estimate: np.ndarray, reference: np.ndarray, *, max_lag: int = 2048) -> tuple[np.ndarray, int]:
    """``estimate`` shifted by the lag in ``[-max_lag, max_lag]`` that maximises its cross-correlation
    with ``reference`` (zero-filled, same length as ``reference``), and that lag (positive: late)."""
    est = np.asarray(estimate, dtype=np.float64).ravel()
    ref = np.asarray(reference, dtype=np.float64).ravel()
    n = len(ref)
    est = np.pad(est[:n], (0, max(0, n - len(est))))
    size = 1 << int(np.ceil(np.log2(2 * n)))
    corr = np.fft.irfft(np.fft.rfft(est, size) * np.conj(np.fft.rfft(ref, size)), size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    lag = int(lags[np.argmax(corr[lags])])
    shifted = np.zeros(n)
    if lag >= 0:
        shifted[: n - lag] = est[lag:]
    else:
        shifted[-lag:] = est[: n + lag]
    return shifted, lag


CLASSIC_CODECS = {"opus": ("OGG", "OPUS"), "vorbis": ("OGG", "VORBIS"), "mp3": ("MP3", "MPEG_LAYER_III")}


def classic_round_trip(
    wav: np.ndarray, sample_rate: int, codec: str, compression_level: float
) -> tuple[np.ndarray, float]:
    """Encode and decode ``wav`` with libsndfile's ``codec`` (opus, vorbis, mp3) at ``compression_level``
    (0 = best quality, 1 = smallest file); returns the decoded audio and the measured kbps."""
    if codec not in CLASSIC_CODECS:
        raise ValueError(f"unknown classic codec {codec!r}; choose from {sorted(CLASSIC_CODECS)}")
    fmt, subtype = CLASSIC_CODECS[codec]
    buf = io.BytesIO()
    try:
        sf.write(buf, np.asarray(wav, dtype=np.float32), sample_rate, format=fmt, subtype=subtype,
                 compression_level=compression_level)  # fmt: skip
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise ValueError(f"libsndfile cannot write {codec} at compression_level={compression_level}: {e}") from e
    kbps = buf.tell() * 8 / (len(wav) / sample_rate) / 1000
    buf.seek(0)
    decoded, sr = sf.read(buf, dtype="float32", always_2d=False)
    if sr != sample_rate:
        raise ValueError(f"{codec} decoded at {sr} Hz, expected {sample_rate}")
    return decoded, kbps


def _score(recon: np.ndarray, wav: np.ndarray, sample_rate: int, max_lag: int) -> tuple[float, float, int]:
    aligned, lag = align(recon, wav, max_lag=max_lag)
    snr = si_snr(aligned, wav)
    mae = log_mel_mae(
        torch.from_numpy(aligned).float(), torch.from_numpy(np.asarray(wav)).float(), sample_rate=sample_rate
    )
    return snr, mae, lag


def evaluate_classic(
    wavs: list[torch.Tensor], sample_rate: int, codec: str, compression_level: float, *, max_lag: int = 2048
) -> dict[str, Any]:
    """Mean measured bitrate, SI-SNR and log-mel MAE of a classic codec over mono ``[S]`` clips."""
    kbps, snrs, maes = [], [], []
    for wav in wavs:
        x = wav.numpy().astype(np.float32)
        recon, rate = classic_round_trip(x, sample_rate, codec, compression_level)
        snr, mae, _ = _score(recon, x, sample_rate, max_lag)
        kbps.append(rate)
        snrs.append(snr)
        maes.append(mae)
    return {"codec": codec, "compression_level": compression_level, "bitrate_kbps": round(float(np.mean(kbps)), 2),
            "si_snr_db": round(float(np.mean(snrs)), 3), "log_mel_mae": round(float(np.mean(maes)), 4)}  # fmt: skip


@torch.no_grad()
def evaluate_codec(
    codec: Any, wavs: list[torch.Tensor], *, levels: list[int] | None = None, max_lag: int = 2048
) -> dict[str, Any]:
    """``wavs``: mono ``[S]`` clips at ``codec.sample_rate``. Mean SI-SNR (aligned) / log-mel MAE per level count."""
    if hasattr(codec, "eval"):
        codec.eval()
    levels = levels or sorted({1, max(1, codec.num_quantizers // 2), codec.num_quantizers})
    out: dict[str, Any] = {"clips": len(wavs), "per_levels": {}}
    all_codes = [codec.encode(wav.reshape(1, 1, -1)) for wav in wavs]  # once: each level count decodes a prefix
    for q in levels:
        snrs, maes = [], []
        for wav, codes in zip(wavs, all_codes):
            recon = codec.decode(codes[:, :q])[0, 0, : wav.shape[-1]]
            snr, mae, _ = _score(recon.float().numpy(), wav.numpy(), codec.sample_rate, max_lag)
            snrs.append(snr)
            maes.append(mae)
        out["per_levels"][str(q)] = {
            "bitrate_kbps": round(codec.frame_rate * q * float(np.log2(codec.codebook_size)) / 1000, 3),
            "si_snr_db": round(float(np.mean(snrs)), 3),
            "log_mel_mae": round(float(np.mean(maes)), 4),
        }
    return out


@torch.no_grad()
def evaluate_fidelity(
    codec: Any,
    wavs: list[torch.Tensor],
    texts: list[str],
    tags: list[dict[str, Any]],
    *,
    mulan: Any,
    judge: Any = None,
    levels: list[int] | None = None,
) -> dict[str, Any]:
    """Does music survive the codec? :func:`score_versions` of the original clips and of their round
    trip through ``codec`` with each number of ``levels``. The stage LMs can only make music that the
    codec can carry, so this bounds what generation can reach."""
    if len(wavs) < 2 or not len(wavs) == len(texts) == len(tags):
        raise ValueError(
            f"need at least 2 clips with one text and tags each, got {len(wavs)} / {len(texts)} / {len(tags)}"
        )
    codec.eval()
    levels = levels or sorted({max(1, codec.num_quantizers // 2), codec.num_quantizers})
    n = min(w.shape[-1] for w in wavs)
    batch = torch.stack([w[:n] for w in wavs])[:, None]  # [B, 1, S] at the codec's rate
    versions = {"original": batch}
    codes = [codec.encode(b[None]) for b in batch]  # once: each level count decodes a prefix
    for q in levels:
        versions[f"codec_q{q}"] = torch.cat([codec.decode(c[:, :q]) for c in codes])[..., :n]
    scores = score_versions(versions, texts, tags, sample_rate=codec.sample_rate, mulan=mulan, judge=judge)
    return {"clips": len(wavs), "seconds": round(n / codec.sample_rate, 3), **scores}


@torch.no_grad()
def score_versions(
    versions: dict[str, torch.Tensor], texts: list[str], tags: list[dict[str, Any]], *, sample_rate: int,
    mulan: Any, judge: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """For each version of the same clips (``name -> audio [B, 1, S]`` at ``sample_rate``): MuLaN cycle
    consistency (mean cosine of a clip with its own caption; ``mcc_shuffled``: with another clip's),
    caption R@1 among these clips (chance ``1 / B``), the independent judge's accuracy per attribute
    the tags state, the share of drumless clips the judge hears drums in, and MuLaN's zero-shot tagging
    (single prompts)."""
    from ..audio import resample
    from .judge import Judge, accuracy, score
    from .mulan_eval import _zero_shot

    judge = judge if judge is not None else Judge()
    mulan.eval()
    text_latents = torch.cat([mulan.get_text_latents(raw_texts=texts[i : i + 64]) for i in range(0, len(texts), 64)])
    out: dict[str, Any] = {"chance_r1": round(1 / len(texts), 4)}
    for name, audio in versions.items():
        clips = audio[:, 0].float()  # the judge listens at the audio's rate, MuLaN at its own
        heard = torch.from_numpy(resample(clips, sample_rate, mulan.sample_rate))  # [B, S] in one call
        audio_latents = torch.cat([mulan.get_audio_latents(part) for part in heard.split(32)])
        sim = audio_latents @ text_latents.T  # [B, B]: clip i against caption j
        predictions = [judge.predict(w.numpy(), sample_rate) for w in clips]
        judged = [score(p, t) for p, t in zip(predictions, tags)]
        drumless = [bool(p["drums"]) for p, t in zip(predictions, tags) if t.get("drums") is False]
        zero_shot = _zero_shot(mulan, audio_latents, [{"tags": t} for t in tags], ensemble=False)
        out[name] = {
            "mcc": round(float(sim.diag().mean()), 4),
            "mcc_shuffled": round(float(sim.roll(1, dims=1).diag().mean()), 4),
            "caption_r1": round(float((sim.argmax(1) == torch.arange(len(texts))).float().mean()), 4),
            "judge": accuracy(judged),
            # drumless clips the judge hears drums in (a decoder's noise reads as percussion)
            "drum_flips": {"rate": round(float(np.mean(drumless)), 4) if drumless else None, "n": len(drumless)},
            "mulan_zero_shot": {k: round(v["accuracy"], 4) for k, v in zero_shot.items()},
            "judge_predictions": [{k: p[k] for k in ("family", "drums")} for p in predictions],
        }
    return out
