"""Audio front end: load, resample, save, and spectrogram / log-mel features.

Loading goes through soundfile (wav, flac, ogg, mp3 and whatever else libsndfile reads), resampling
through soxr, features through ``torch.stft`` and ``librosa.filters.mel``. There is no torchaudio
dependency (its wheels pin another torch).

Shape letters: B batch, C channels, S samples, F frequency bins, T frames.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import soxr
import torch
from torch import Tensor, nn

from .checkpoint import atomic_path

__all__ = [
    "AudioLoadError",
    "load_audio",
    "save_audio",
    "resample",
    "stft",
    "Spectrogram",
    "MelSpectrogram",
    "LogFrequencySpectrogram",
    "phase_vocoder",
]


class AudioLoadError(ValueError):
    """Raised for any audio file that cannot be read: missing, empty, truncated or not audio.

    Attributes:
        path: the file at fault.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot load audio file {self.path!r}: {reason}")


def _check_riff_complete(path: Path) -> None:
    """libsndfile silently shortens a truncated WAV to what is on disk; the RIFF header knows better."""
    with open(path, "rb") as f:
        head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    (riff_size,) = struct.unpack("<I", head[4:8])
    file_size = path.stat().st_size
    # 0 and 0xFFFFFFFF are used by streaming writers that never patch the header.
    if riff_size not in (0, 0xFFFFFFFF) and file_size < riff_size + 8:
        raise AudioLoadError(path, f"truncated WAV: header says {riff_size + 8} bytes, file has {file_size}")


def load_audio(
    path: str | os.PathLike,
    *,
    sample_rate: int | None = None,
    mono: bool = True,
    offset: float = 0.0,
    duration: float | None = None,
) -> tuple[Tensor, int]:
    """Load an audio file as float32.

    Args:
        path: any file libsndfile reads (wav, flac, ogg, mp3, ...).
        sample_rate: resample to this rate with soxr; ``None`` keeps the file's rate.
        mono: average the channels into one.
        offset: start reading at this many seconds.
        duration: read at most this many seconds (``None``: to the end).

    Returns:
        ``(wav, sample_rate)``: wav is ``[S]`` when ``mono`` else ``[C, S]``.

    Raises:
        AudioLoadError: the file is missing, empty, truncated or not audio.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioLoadError(path, "no such file")
    if path.stat().st_size == 0:
        raise AudioLoadError(path, "file is empty (0 bytes)")
    _check_riff_complete(path)
    try:
        with sf.SoundFile(str(path)) as f:
            file_rate = f.samplerate
            declared = f.frames
            start = int(round(offset * file_rate))
            if start:
                f.seek(min(start, declared))
            count = -1 if duration is None else int(round(duration * file_rate))
            data = f.read(frames=count, dtype="float32", always_2d=True)
    except AudioLoadError:
        raise
    except Exception as e:  # libsndfile raises several types (LibsndfileError, RuntimeError, ...)
        raise AudioLoadError(path, f"{type(e).__name__}: {e}") from e
    if data.shape[0] == 0:
        reason = "no samples" if start < max(declared, 1) else f"offset {offset}s is past the end"
        raise AudioLoadError(path, reason)
    expected = declared - start if duration is None else min(count, declared - start)
    # mp3 and some other decoders stop early on truncated data instead of raising.
    if data.shape[0] < expected * 0.99 - 1152:
        raise AudioLoadError(path, f"truncated: header declares {expected} frames, decoded {data.shape[0]}")
    if not np.isfinite(data).all():
        raise AudioLoadError(path, "contains NaN or infinite samples")

    wav = data.T  # [C, S]
    if mono:
        wav = wav.mean(axis=0)
    if sample_rate is not None and sample_rate != file_rate:
        wav = resample(wav, file_rate, sample_rate)
        file_rate = sample_rate
    return torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), int(file_rate)


def resample(wav: np.ndarray | Tensor, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample ``[S]`` or ``[C, S]`` audio with soxr (high quality). Returns a float32 numpy array."""
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got orig_sr={orig_sr}, target_sr={target_sr}")
    x = wav.detach().cpu().numpy() if isinstance(wav, Tensor) else np.asarray(wav)
    x = x.astype(np.float32, copy=False)
    if orig_sr == target_sr:
        return x
    if x.ndim == 1:
        return soxr.resample(x, orig_sr, target_sr, quality="HQ").astype(np.float32)
    if x.ndim == 2:  # soxr wants [S, C]
        return np.ascontiguousarray(soxr.resample(x.T, orig_sr, target_sr, quality="HQ").T, dtype=np.float32)
    raise ValueError(f"wav must be [S] or [C, S], got shape {tuple(x.shape)}")


def normalize_level(wav: Tensor, *, target_rms: float = 0.1, max_peak: float = 0.99) -> Tensor:
    """``wav [..., S]`` scaled so that each clip's RMS is ``target_rms`` (-20 dBFS by default), or less
    where that would take its peak above ``max_peak``. Silence stays silence."""
    if target_rms <= 0 or not 0 < max_peak <= 1:
        raise ValueError(f"need target_rms > 0 and 0 < max_peak <= 1, got {target_rms}, {max_peak}")
    x = wav.float()
    rms = x.pow(2).mean(-1, keepdim=True).sqrt()
    peak = x.abs().amax(-1, keepdim=True)
    gain = torch.minimum(target_rms / rms.clamp_min(1e-9), max_peak / peak.clamp_min(1e-9))
    return torch.where(peak > 1e-9, x * gain, x)


def save_audio(path: str | os.PathLike, wav: Tensor | np.ndarray, sample_rate: int) -> Path:
    """Write ``[S]`` or ``[C, S]`` audio; the format follows the extension. Written atomically."""
    path = Path(path)
    x = wav.detach().cpu().float().numpy() if isinstance(wav, Tensor) else np.asarray(wav, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise ValueError(f"wav must be [S] or [C, S], got shape {tuple(x.shape)}")
    fmt = path.suffix.lstrip(".").upper() or "WAV"
    with atomic_path(path, suffix=path.suffix) as tmp:
        sf.write(tmp, x.T if x.ndim == 2 else x, sample_rate, format=fmt)
    return path


def stft(
    wav: Tensor,
    *,
    n_fft: int,
    win_length: int,
    hop_length: int,
    center: bool = True,
    pad_mode: str = "constant",
) -> Tensor:
    """Complex STFT with a periodic Hann window (librosa's convention). ``[B, S] -> [B, F, T]``."""
    window = torch.hann_window(win_length, periodic=True, device=wav.device, dtype=torch.float32)
    return torch.stft(
        wav.float(),
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=center,
        pad_mode=pad_mode,
        return_complex=True,
    )


@dataclass(frozen=True)
class _StftArgs:
    n_fft: int
    win_length: int
    hop_length: int
    center: bool
    pad_mode: str


class Spectrogram(nn.Module):
    """Linear magnitude**power spectrogram. ``[B, S] -> [B, F, T]`` with ``F = n_fft // 2 + 1``.

    ``hop_length`` defaults to ``win_length // 2``; ``win_length`` to ``n_fft``.
    """

    def __init__(
        self,
        *,
        n_fft: int = 400,
        win_length: int | None = None,
        hop_length: int | None = None,
        power: float = 2.0,
        center: bool = True,
        pad_mode: str = "constant",
    ):
        super().__init__()
        win_length = win_length or n_fft
        if win_length > n_fft:
            raise ValueError(f"win_length ({win_length}) must be <= n_fft ({n_fft})")
        hop_length = hop_length or max(win_length // 2, 1)
        self.args = _StftArgs(n_fft, win_length, hop_length, center, pad_mode)
        self.power = power
        self.num_bins = n_fft // 2 + 1

    @property
    def hop_length(self) -> int:
        return self.args.hop_length

    def complex_stft(self, wav: Tensor) -> Tensor:
        a = self.args
        return stft(
            wav,
            n_fft=a.n_fft,
            win_length=a.win_length,
            hop_length=a.hop_length,
            center=a.center,
            pad_mode=a.pad_mode,
        )

    def from_complex(self, spec: Tensor) -> Tensor:
        """Magnitude**power of a complex STFT ``[B, F, T]``."""
        mag = spec.abs()
        return mag.pow(self.power) if self.power != 1 else mag

    def forward(self, wav: Tensor) -> Tensor:
        return self.from_complex(self.complex_stft(wav))


class MelSpectrogram(Spectrogram):
    """Mel spectrogram on ``torch.stft`` with ``librosa.filters.mel`` (Slaney). ``[B, S] -> [B, n_mels, T]``.

    Matches ``librosa.feature.melspectrogram`` with the same arguments (``pad_mode="constant"``).
    """

    mel_fb: Tensor

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        n_fft: int = 400,
        win_length: int | None = None,
        hop_length: int | None = 160,
        n_mels: int = 128,
        f_min: float = 0.0,
        f_max: float | None = None,
        power: float = 2.0,
        center: bool = True,
        pad_mode: str = "constant",
    ):
        super().__init__(
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            power=power,
            center=center,
            pad_mode=pad_mode,
        )
        fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max)
        self.register_buffer("mel_fb", torch.from_numpy(fb).float(), persistent=False)  # [n_mels, F]
        self.num_bins = n_mels

    def from_complex(self, spec: Tensor) -> Tensor:
        return torch.matmul(self.mel_fb, super().from_complex(spec))


def log_frequency_filterbank(
    *, sample_rate: int, n_fft: int, f_min: float = 32.703, bins_per_octave: int = 12, n_bins: int = 96
) -> np.ndarray:
    """Triangular filters centred on a geometric (musical) scale, applied to an STFT's bins.

    Filter ``k`` is centred on ``f_min * 2 ** (k / bins_per_octave)`` (default: C1 and one filter per
    semitone) and spans its neighbours' centres, but never less than one STFT bin on each side, so
    low filters, narrower than the STFT's resolution, interpolate between the two nearest bins instead
    of coming out empty. Each filter sums to 1 (a pitch's energy is the same in every register).
    Returns ``[n_bins, n_fft // 2 + 1]``.
    """
    if bins_per_octave < 1 or n_bins < 1:
        raise ValueError(f"bins_per_octave and n_bins must be >= 1, got {bins_per_octave} and {n_bins}")
    top = f_min * 2.0 ** ((n_bins - 1) / bins_per_octave)
    if f_min <= 0 or top >= sample_rate / 2:
        raise ValueError(
            f"log-frequency bins span {f_min:.1f}-{top:.1f} Hz, which must lie inside (0, {sample_rate / 2:.0f}) Hz "
            f"(Nyquist at sample_rate={sample_rate}); lower n_bins or f_min"
        )
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    df = sample_rate / n_fft
    centers = f_min * 2.0 ** (np.arange(-1, n_bins + 1) / bins_per_octave)
    fb = np.zeros((n_bins, len(fft_freqs)), dtype=np.float64)
    for k in range(n_bins):
        lo, c, hi = centers[k], centers[k + 1], centers[k + 2]
        left, right = max(c - lo, df), max(hi - c, df)
        w = np.minimum((fft_freqs - (c - left)) / left, ((c + right) - fft_freqs) / right)
        w = np.clip(w, 0.0, None)
        fb[k] = w / w.sum()
    return fb.astype(np.float32)


class LogFrequencySpectrogram(Spectrogram):
    """Power spectrogram on a musical (log-frequency) scale, one bin per semitone by default.

    A mel scale of 128 bands at 16 kHz is about 22 Hz wide below 1 kHz, wider than a semitone below
    ~400 Hz, so it cannot tell a major from a minor chord in the bass and middle registers; these bins
    can, from the STFT's resolution upward (``sample_rate / n_fft``: 7.8 Hz at 16 kHz and n_fft 2048,
    a semitone from ~130 Hz). With 12 bins per octave, a 12-bin patch is exactly one octave.
    ``[B, S] -> [B, n_bins, T]``.
    """

    log_fb: Tensor

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        n_fft: int = 2048,
        win_length: int | None = None,
        hop_length: int | None = 160,
        f_min: float = 32.703,
        bins_per_octave: int = 12,
        n_bins: int = 96,
        power: float = 2.0,
        center: bool = True,
        pad_mode: str = "constant",
    ):
        super().__init__(
            n_fft=n_fft, win_length=win_length, hop_length=hop_length, power=power, center=center, pad_mode=pad_mode
        )
        fb = log_frequency_filterbank(
            sample_rate=sample_rate, n_fft=n_fft, f_min=f_min, bins_per_octave=bins_per_octave, n_bins=n_bins
        )
        self.register_buffer("log_fb", torch.from_numpy(fb), persistent=False)
        self.num_bins = n_bins
        self.f_min, self.bins_per_octave = f_min, bins_per_octave

    def from_complex(self, spec: Tensor) -> Tensor:
        return torch.matmul(self.log_fb, super().from_complex(spec))


def phase_vocoder(spec: Tensor, rate: float, hop_length: int) -> Tensor:
    """Time-stretch a complex STFT ``[B, F, T]`` by ``rate`` (>1 faster, <1 slower) keeping pitch.

    The standard phase vocoder (Flanagan & Golden 1966; as in ``librosa.effects.time_stretch``):
    magnitudes are interpolated between neighbouring frames and phases advanced by the measured
    instantaneous frequency. It needs complex input; a power spectrogram has no phase to advance.
    """
    if not torch.is_complex(spec):
        raise ValueError(f"phase_vocoder needs a complex STFT, got dtype {spec.dtype}")
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if rate == 1.0:
        return spec
    num_bins, num_frames = spec.shape[-2], spec.shape[-1]
    # expected phase advance per hop of bin k: 2*pi*k*hop/n_fft, n_fft = 2*(num_bins-1)
    steps = torch.arange(0, num_frames, rate, device=spec.device, dtype=torch.float64)
    phase_advance = torch.linspace(0, np.pi * hop_length, num_bins, device=spec.device, dtype=torch.float64)
    padded = torch.nn.functional.pad(spec, (0, 2))
    idx0 = steps.floor().long()
    frac = (steps - idx0).to(spec.real.dtype)
    s0, s1 = padded[..., idx0], padded[..., idx0 + 1]
    mag = (1 - frac) * s0.abs() + frac * s1.abs()
    dphi = s1.angle() - s0.angle() - phase_advance.to(spec.real.dtype)[:, None]
    dphi = dphi - 2 * np.pi * torch.round(dphi / (2 * np.pi))
    inc = dphi + phase_advance.to(spec.real.dtype)[:, None]
    phase0 = spec[..., :1].angle()
    phase = torch.cat([phase0, phase0 + torch.cumsum(inc, dim=-1)[..., :-1]], dim=-1)
    return torch.polar(mag, phase)
