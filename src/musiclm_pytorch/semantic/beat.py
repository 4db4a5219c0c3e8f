"""The beat grid of a clip, from its semantic ids alone: period and phase in frames.

The generated semantic ids carry almost no pulse (benchmarks/RESULTS.md, "Why the generated semantic ids
carry no beat"): a small LM does not learn from 3,000 clips to place onsets a beat apart. Given the grid
as an input (:class:`~musiclm_pytorch.lm.TokenLM` ``beat_harmonics``), where the beat falls is no longer
something to infer. The grid is estimated from the ids themselves (read through the tokenizer's
centers, the built-in features' onset strength), so a stage still trains from audio alone.

Estimate: the onset curve ``o[t]`` (mean removed) against a complex tone of each candidate period ``P``,
``z(P) = sum_t o[t] exp(-2 pi i t / P)``, over tempi ``bpm_range`` in steps of 0.25 bpm (an integer
autocorrelation lag is 4 % off at 120 bpm, half a beat after 10 s). The best ``|z|`` gives the period;
``angle(z)`` the phase: onsets at ``t = phase + k P``. Strength: ``|z| / (||o|| sqrt(T / 2))``, near 1 for
a pure pulse train's fundamental, near 0 for noise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from .tokenizer import SemanticTokenizer

ONSET_FEATURE = 24  # MusicalFeatureExtractor: the current frame's onset strength (25, 26: one, two beats before)


def onset_from_ids(tokenizer: SemanticTokenizer, ids: Tensor) -> np.ndarray:
    """``ids [..., T] -> onset strength [..., T]`` read through a fitted tokenizer's centers (de-standardised).

    Only the built-in ``"musical"`` features hold an onset strength; other feature kinds are refused."""
    features = tokenizer.config.get("features", "musical")
    if features != "musical":
        raise ValueError(
            f"the beat is read from the 'musical' features' onset strength; this tokenizer uses {features!r}"
        )
    centers, mean, std = tokenizer.centers, tokenizer.mean, tokenizer.std
    raw = centers[:, ONSET_FEATURE].float() * std[ONSET_FEATURE].float() + mean[ONSET_FEATURE].float()
    return raw[ids.long().cpu()].numpy()


def estimate_beat(
    onset: np.ndarray, frame_rate: float, *, bpm_range: tuple[float, float] = (60.0, 200.0), step_bpm: float = 0.25
) -> tuple[float, float, float]:
    """``(period, phase, strength)`` of a 1-D onset curve: the period in frames, the phase in ``[0, period)``
    frames (the first beat), and the strength in ``[0, 1]`` (module docstring)."""
    o = np.asarray(onset, dtype=np.float64)
    if o.ndim != 1 or len(o) < 4:
        raise ValueError(f"onset must be a 1-D curve of at least 4 frames, got shape {o.shape}")
    lo, hi = bpm_range
    if not 0 < lo < hi:
        raise ValueError(f"bpm_range must be (low, high) with 0 < low < high, got {bpm_range}")
    x = o - o.mean()
    bpms = np.arange(lo, hi + step_bpm / 2, step_bpm)
    periods = 60.0 * frame_rate / bpms  # frames per beat
    t = np.arange(len(x))
    z = np.exp(-2j * np.pi * t[None, :] / periods[:, None]) @ x
    best = int(np.abs(z).argmax())
    period = float(periods[best])
    phase = float((-np.angle(z[best]) / (2 * np.pi) * period) % period)
    norm = float(np.linalg.norm(x)) * np.sqrt(len(x) / 2)
    strength = float(np.abs(z[best]) / norm) if norm > 0 else 0.0
    return period, phase, min(strength, 1.0)


def grid_of_ids(tokenizer: SemanticTokenizer, ids: Tensor) -> tuple[float, float]:
    """``(period, phase)`` in frames of one id sequence ``ids [T]``: :func:`estimate_beat` over the onset
    strength its ids imply through ``tokenizer`` (at the tokenizer's frame rate)."""
    period, phase, _ = estimate_beat(onset_from_ids(tokenizer, ids), float(tokenizer.frame_rate))
    return period, phase


def beat_features(frames: Tensor, period: Tensor, phase: Tensor, harmonics: int) -> Tensor:
    """Beat-phase features ``[B, N, 2 * harmonics + 2]`` of frame indices ``frames [N]`` for grids
    ``period, phase [B]`` (frames): sine and cosine of the beat phase at 1, 2, 4, ... times the beat
    (``harmonics`` of them: beat and subdivisions) and at a quarter of it (the bar of 4)."""
    u = (frames[None, :].float() - phase[:, None].float()) / period[:, None].float()  # [B, N] in beats
    mult = torch.cat([2.0 ** torch.arange(harmonics, dtype=torch.float32), torch.tensor([0.25])]).to(u.device)
    ang = 2 * torch.pi * u[..., None] * mult  # [B, N, H + 1]
    return torch.cat([ang.sin(), ang.cos()], dim=-1)
