"""Which features make good semantic tokens? Measured on rendered music whose notes we know.

Usage::

    python benchmarks/semantic_features.py [--compositions 80] [--clusters 64] [--mulan ckpt.safetensors]

Semantic tokens should carry melody, harmony and rhythm, and little timbre. Each generated
composition is rendered twice, identical except for the instrument (lead + chords; pairs from
different families), with a known note list, so every 25 Hz frame has ground truth: the melody's
pitch class (or rest), the chord (pitch-class set of the accompaniment) and the beat phase
(quarter-beat bins). For every candidate feature, k-means (``--clusters``) is fit on the first half
of the compositions and applied to the second half, where we report:

- ``melody_acc`` / ``chord_acc`` / ``beat_acc``: accuracy of predicting the label from the token
  alone (each token -> its most frequent label on the fit half), beside the majority-label
  baseline; and the normalised mutual information (NMI) between tokens and labels;
- ``timbre_agreement``: fraction of frames where both renders (two instruments) get the same token
  (1 = timbre-invariant; chance is about the sum of squared token frequencies, reported too).

Candidates: ``musical`` (our built-in extractor: CQT chroma, salient pitch class, onset rhythm),
``log-mel`` (64 bands: the acoustic baseline a semantic tokenizer must beat), and with ``--mulan``
the MuLaN audio tower's time-resolved states (``frame_states``, 160 ms columns repeated to 25 Hz).
One JSON line per candidate.
"""

from __future__ import annotations

import argparse
import json
import random

import librosa
import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import normalized_mutual_info_score

from musiclm_pytorch.data.compose import arrange, generate_composition
from musiclm_pytorch.data.render import FluidRenderer
from musiclm_pytorch.data.tags import PITCH_CLASSES
from musiclm_pytorch.semantic import MusicalFeatureExtractor

SR, RATE = 16000, 25.0
# (program A, program B): lead + chords change family, everything else stays
PAIRS = [(0, 40), (24, 73), (56, 80), (19, 11), (4, 65), (46, 71), (81, 0), (68, 25)]


def render_pairs(n: int, seconds: float, seed: int) -> list[dict]:
    renderer = FluidRenderer(sample_rate=SR, soundfonts=["FluidR3_GM.sf2"])
    rng = random.Random(seed)
    out = []
    for i in range(n):
        comp = generate_composition(seed * 1000 + i)
        tonic, bpm = rng.choice(PITCH_CLASSES), rng.uniform(70, 160)
        pa, pb = PAIRS[i % len(PAIRS)]
        wavs, arr = [], None
        for program in (pa, pb):
            arr = arrange(comp, tonic=tonic, bpm=bpm, program=program, register="mid", dynamics="medium",
                          drums=False, bass_program=33, seconds=seconds, seed=i)  # fmt: skip
            wavs.append(renderer.render(arr))
        frames = int(seconds * RATE)
        t = (np.arange(frames) + 0.5) / RATE
        melody = np.full(frames, 12)
        chord = np.zeros(frames, dtype=np.int64)
        for note in arr.notes:  # type: ignore[union-attr]
            on = (t >= note.start) & (t < note.end)
            if note.channel == 0:
                melody[on] = note.pitch % 12
            elif note.channel == 1:
                chord[on] |= 1 << (note.pitch % 12)
        beat = ((t / (60.0 / bpm)) % 1.0 * 4).astype(np.int64)
        out.append({"wavs": wavs, "melody": melody, "chord": chord, "beat": beat})
    renderer.close()
    return out


def _frames(x: np.ndarray, frames: int) -> np.ndarray:
    x = x[:frames]
    return np.pad(x, ((0, frames - len(x)), (0, 0)), mode="edge") if len(x) < frames else x


def featurizers(mulan_path: str | None) -> dict:
    musical = MusicalFeatureExtractor(sample_rate=SR, frame_rate=RATE)

    def logmel(wav: np.ndarray) -> np.ndarray:
        mel = librosa.feature.melspectrogram(y=wav, sr=SR, n_fft=1024, hop_length=int(SR / RATE), n_mels=64)
        return np.log(mel + 1e-6).T

    feats = {"musical": musical, "log-mel": logmel}
    if mulan_path:
        from musiclm_pytorch import MuLaN, load

        tower = load(mulan_path, expected=MuLaN).audio.eval()

        def states(wav: np.ndarray) -> np.ndarray:
            s = tower.frame_states(torch.from_numpy(wav)[None].float())[0].numpy()
            per = int(round(RATE * tower.patch_size[1] * tower.hop_length / SR))  # 25 Hz frames per column
            return np.repeat(s, per, axis=0) if per >= 1 else s

        feats["mulan-states"] = states
    return feats


def evaluate(name: str, fn, clips: list[dict], clusters: int, seed: int) -> dict:
    frames = len(clips[0]["melody"])
    half = len(clips) // 2
    fa = [[_frames(fn(w), frames) for w in c["wavs"]] for c in clips]
    fit = np.concatenate([f for pair in fa[:half] for f in pair])
    mean, std = fit.mean(0), fit.std(0) + 1e-6
    km = MiniBatchKMeans(n_clusters=clusters, random_state=seed, n_init=3, batch_size=4096).fit((fit - mean) / std)
    ids = [[km.predict((f - mean) / std) for f in pair] for pair in fa]
    report: dict = {"candidate": name, "clusters": clusters, "compositions": len(clips)}
    for label in ("melody", "chord", "beat"):
        train_ids = np.concatenate([i for pair in ids[:half] for i in pair])
        train_y = np.concatenate([c[label] for c in clips[:half] for _ in range(2)])
        test_ids = np.concatenate([i for pair in ids[half:] for i in pair])
        test_y = np.concatenate([c[label] for c in clips[half:] for _ in range(2)])
        table = {}
        for k in np.unique(train_ids):
            vals, counts = np.unique(train_y[train_ids == k], return_counts=True)
            table[int(k)] = vals[counts.argmax()]
        vals, counts = np.unique(train_y, return_counts=True)
        majority = vals[counts.argmax()]
        pred = np.array([table.get(int(k), majority) for k in test_ids])
        report[f"{label}_acc"] = round(float((pred == test_y).mean()), 4)
        report[f"{label}_majority"] = round(float((test_y == majority).mean()), 4)
        report[f"{label}_nmi"] = round(float(normalized_mutual_info_score(test_y, test_ids)), 4)
    agree = np.concatenate([a == b for a, b in ids[half:]])
    freq = np.bincount(np.concatenate([i for pair in ids[half:] for i in pair]), minlength=clusters)
    freq = freq / freq.sum()
    report["timbre_agreement"] = round(float(agree.mean()), 4)
    report["timbre_agreement_chance"] = round(float((freq**2).sum()), 4)
    return report


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--compositions", type=int, default=80)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--clusters", type=int, default=64)
    p.add_argument("--mulan", help="a MuLaN checkpoint: adds its audio tower's time-resolved states")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    clips = render_pairs(a.compositions, a.seconds, a.seed)
    for name, fn in featurizers(a.mulan).items():
        print(json.dumps(evaluate(name, fn, clips, a.clusters, a.seed)), flush=True)


if __name__ == "__main__":
    main()
