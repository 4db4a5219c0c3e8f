"""Does melody conditioning keep the melody? (``musiclm eval melody``)

Inputs are whistle-like melodies (:func:`whistled_melody`: notes of a random major or minor scale,
a sine with a little second harmonic and vibrato, with rests), each given with a held-out prompt to
``MusicLM.generate(..., melody=...)``. Per 40 ms frame, the pitch class of the main melody is the
strongest chroma bin (librosa's STFT chroma); the score is the share of the input's voiced frames
whose pitch class the output matches, beside the same output against *another* input's melody (the
shuffled control: what matching by chance, or by the prompt's key alone, gives).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..pipeline import MusicLM

_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}


def whistled_melody(seed: int, *, seconds: float = 10.0, sample_rate: int = 16000) -> np.ndarray:
    """A whistle-like melody ``[S]`` (float32, peak 0.5): 0.2-0.6 s notes of a random scale in the
    octave above A4, some rests."""
    rng = np.random.default_rng(seed)
    tonic = int(rng.integers(0, 12))
    scale = _SCALES[str(rng.choice(list(_SCALES)))]
    out = np.zeros(int(seconds * sample_rate), dtype=np.float32)
    t0, degree = 0, int(rng.integers(0, 7))
    while t0 < len(out):
        n = int(rng.uniform(0.2, 0.6) * sample_rate)
        if rng.random() > 0.12:  # a note (else a rest)
            degree = int(np.clip(degree + rng.integers(-2, 3), 0, 13))
            midi = 69 + tonic + scale[degree % 7] + 12 * (degree // 7)
            f = 440.0 * 2 ** ((midi - 69) / 12)
            t = np.arange(min(n, len(out) - t0)) / sample_rate
            phase = 2 * np.pi * f * t + 0.3 * np.sin(2 * np.pi * 5.5 * t)  # vibrato
            env = np.minimum(1.0, np.minimum(t / 0.02, (t[-1] - t + 1e-3) / 0.03))
            out[t0 : t0 + len(t)] = env * (np.sin(phase) + 0.15 * np.sin(2 * phase))
        t0 += n
    return 0.5 * out / max(float(np.abs(out).max()), 1e-9)


def pitch_classes(wav: np.ndarray, sample_rate: int, *, hop_seconds: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """``(pitch class [T], voiced [T])`` per ``hop_seconds``: the strongest chroma bin, and whether the
    frame's level is within 20 dB of the loudest frame's."""
    import librosa

    hop = int(round(hop_seconds * sample_rate))
    y = np.asarray(wav, dtype=np.float32)
    chroma = librosa.feature.chroma_stft(y=y, sr=sample_rate, hop_length=hop, n_fft=4 * hop)
    rms = librosa.feature.rms(y=y, frame_length=4 * hop, hop_length=hop)[0]
    t = min(chroma.shape[1], len(rms))
    return chroma[:, :t].argmax(0), rms[:t] > 0.1 * max(float(rms.max()), 1e-9)


def _match(made: np.ndarray, melody: tuple[np.ndarray, np.ndarray]) -> float:
    pc, voiced = melody
    t = min(len(made), len(pc))
    v = voiced[:t]
    return float((made[:t][v] == pc[:t][v]).mean()) if v.any() else float("nan")


@torch.no_grad()
def melody_agreement(
    model: MusicLM,
    prompts: Sequence[str],
    *,
    seconds: float = 10.0,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Per-40 ms pitch-class agreement of melody-conditioned generations with their melodies (module
    docstring); one whistled melody per prompt (seeds ``seed, seed + 1, ...``)."""
    if len(prompts) < 2:
        raise ValueError(f"melody agreement needs at least 2 prompts, got {len(prompts)}")
    sr = model.sample_rate
    melodies = [whistled_melody(seed + i, seconds=seconds, sample_rate=sr) for i in range(len(prompts))]
    inputs = [pitch_classes(m, sr) for m in melodies]
    own, shuffled, unconditioned = [], [], []
    gen = torch.Generator(model.device).manual_seed(seed)
    for i, text in enumerate(tqdm(prompts, desc="melodies", disable=not progress)):
        out = model.generate([text], seconds=seconds, melody=(torch.from_numpy(melodies[i]), sr), generator=gen)
        made = pitch_classes(out.wavs[0].cpu().numpy(), sr)[0]
        own.append(_match(made, inputs[i]))
        shuffled.append(_match(made, inputs[(i + 1) % len(inputs)]))
        free = model.generate([text], seconds=seconds, generator=gen)  # the same prompt without the melody
        unconditioned.append(_match(pitch_classes(free.wavs[0].cpu().numpy(), sr)[0], inputs[i]))
    return {
        "prompts": len(prompts), "seconds": seconds, "seed": seed, "hop_seconds": 0.04,
        "pitch_class_match": round(float(np.nanmean(own)), 4),
        "shuffled_melody": round(float(np.nanmean(shuffled)), 4),
        "without_melody": round(float(np.nanmean(unconditioned)), 4),
        "chance": round(1 / 12, 4),
        "per_prompt": [round(x, 4) for x in own],
    }  # fmt: skip


__all__ = ["melody_agreement", "pitch_classes", "whistled_melody"]
