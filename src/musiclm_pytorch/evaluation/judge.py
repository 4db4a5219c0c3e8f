"""An independent judge of whether audio matches a description: tempo, key, drums, instrument family.

Independent of our models (it must be, since it judges them): signal processing from librosa plus
two small linear classifiers on hand-crafted features, calibrated on rendered audio whose
attributes are known.

- Tempo: ``librosa.beat.beat_track``. Scored exact within 4 %, and within 4 % of x2, x1/2, x3/2 or
  x2/3 of the truth (metrical-level errors).
- Key: mean chroma (CQT) correlated with the Krumhansl-Kessler key profiles (24 keys). Scored
  exact, tonic only, and exact-or-relative (C major = A minor).
- Drums: logistic regression on percussive-component features (HPSS): energy ratio, flatness,
  onset regularity.
- Instrument family: multinomial logistic regression on timbre features of the harmonic component
  (MFCC mean/std, spectral centroid/bandwidth/rolloff/flatness/contrast, zero crossings, attack).

The classifier weights ship in ``judge_weights.json`` (numpy inference, no pickle); they are
remade by ``musiclm eval judge-fit`` (command and accuracies in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import librosa
import numpy as np

from ..data.tags import PITCH_CLASSES, tempo_class

SR = 16000
# Krumhansl & Kessler (1982) probe-tone profiles, C major / C minor
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
TEMPO_FACTORS = (1.0, 2.0, 0.5, 1.5, 2.0 / 3.0)


def estimate_tempo(y: np.ndarray, sr: int = SR) -> float:
    onset = librosa.onset.onset_strength(y=y, sr=sr)
    tempo, _ = librosa.beat.beat_track(onset_envelope=onset, sr=sr)
    return float(np.atleast_1d(tempo)[0])


def estimate_key(y: np.ndarray, sr: int = SR) -> tuple[str, str, np.ndarray]:
    """``(tonic, mode, scores[24])``; scores are Pearson correlations, majors first."""
    return key_from_chroma(librosa.feature.chroma_cqt(y=y, sr=sr).mean(axis=1))


def key_from_chroma(chroma: np.ndarray) -> tuple[str, str, np.ndarray]:
    """The Krumhansl-Kessler key of a mean 12-bin chroma (C first): ``(tonic, mode, scores[24])``."""
    scores = np.array(
        [np.corrcoef(chroma, np.roll(profile, k))[0, 1] for profile in (KK_MAJOR, KK_MINOR) for k in range(12)]
    )
    best = int(np.nan_to_num(scores, nan=-1).argmax())
    return PITCH_CLASSES[best % 12], ("major", "minor")[best // 12], scores


def tempo_scores(estimate: float, truth: float, tolerance: float = 0.04) -> dict[str, bool]:
    return {
        "tempo": abs(estimate - truth) <= tolerance * truth,
        "tempo_any_octave": any(abs(estimate - f * truth) <= tolerance * f * truth for f in TEMPO_FACTORS),
    }


def key_scores(tonic: str, mode: str, true_tonic: str, true_mode: str) -> dict[str, bool]:
    exact = tonic == true_tonic and mode == true_mode
    t, tt = PITCH_CLASSES.index(tonic), PITCH_CLASSES.index(true_tonic)
    relative = mode != true_mode and ((t - tt) % 12 == (9 if true_mode == "major" else 3))
    return {"key": exact, "key_tonic": t == tt, "key_or_relative": exact or relative}


def drum_features(y_perc: np.ndarray, y: np.ndarray, sr: int = SR) -> np.ndarray:
    total = float(np.sum(y**2)) + 1e-10
    perc = float(np.sum(y_perc**2))
    flat = librosa.feature.spectral_flatness(y=y_perc + 1e-6).mean()
    onset = librosa.onset.onset_strength(y=y_perc, sr=sr)
    ac = librosa.autocorrelate(onset - onset.mean())
    regularity = float(ac[1:].max() / (ac[0] + 1e-9)) if len(ac) > 1 else 0.0
    cent = librosa.feature.spectral_centroid(y=y_perc + 1e-6, sr=sr).mean() / (sr / 2)
    return np.array([np.log10(perc / total + 1e-6), np.log10(flat + 1e-6), regularity, cent, onset.std()])


def timbre_features(y_harm: np.ndarray, y: np.ndarray, sr: int = SR) -> np.ndarray:
    mfcc = librosa.feature.mfcc(y=y_harm, sr=sr, n_mfcc=20)
    spec = np.abs(librosa.stft(y_harm, n_fft=1024, hop_length=256))
    feats = [
        mfcc.mean(1), mfcc.std(1),
        librosa.feature.spectral_contrast(S=spec, sr=sr).mean(1),
        [librosa.feature.spectral_centroid(S=spec, sr=sr).mean() / (sr / 2)],
        [librosa.feature.spectral_bandwidth(S=spec, sr=sr).mean() / (sr / 2)],
        [librosa.feature.spectral_rolloff(S=spec, sr=sr).mean() / (sr / 2)],
        [np.log10(librosa.feature.spectral_flatness(S=spec).mean() + 1e-6)],
        [librosa.feature.zero_crossing_rate(y_harm).mean()],
    ]  # fmt: skip
    env = librosa.feature.rms(y=y)[0]
    d_env = np.diff(env)
    feats.append([d_env.clip(min=0).mean() / (env.mean() + 1e-9), -d_env.clip(max=0).mean() / (env.mean() + 1e-9)])
    return np.concatenate([np.asarray(f, dtype=np.float64).ravel() for f in feats])


def extract(y: np.ndarray, sr: int = SR) -> dict[str, Any]:
    """Everything the judge measures on one clip (mono, any rate; resampled to 16 kHz)."""
    if sr != SR:
        y = librosa.resample(y, orig_sr=sr, target_sr=SR)
    y = y.astype(np.float32)
    if len(y) < SR // 2:
        raise ValueError(f"the judge needs at least 0.5 s of audio, got {len(y) / SR:.2f} s")
    y_harm, y_perc = librosa.effects.hpss(y)
    tonic, mode, _ = estimate_key(y_harm)
    return {
        "tempo_bpm": estimate_tempo(y),
        "tonic": tonic,
        "mode": mode,
        "drum_features": drum_features(y_perc, y).tolist(),
        "timbre_features": timbre_features(y_harm, y).tolist(),
    }


@dataclass
class LinearModel:
    """``softmax((x - mean) / scale @ coef.T + intercept)`` over ``classes``."""

    classes: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    def proba(self, x: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(x) - self.mean) / self.scale @ self.coef.T + self.intercept
        if len(self.classes) == 2 and z.shape[1] == 1:  # binary logistic regression
            p = 1 / (1 + np.exp(-z[:, 0]))
            return np.stack([1 - p, p], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def to_json(self) -> dict[str, Any]:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LinearModel:
        return cls(d["classes"], *(np.asarray(d[k], dtype=np.float64) for k in ("mean", "scale", "coef", "intercept")))


def fit_linear(x: np.ndarray, labels: list[str], *, c: float = 1.0) -> LinearModel:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(x), labels)
    return LinearModel([str(c) for c in clf.classes_], scaler.mean_, scaler.scale_, clf.coef_, clf.intercept_)


class Judge:
    """Predict tempo, key, drums and instrument family; score predictions against intended tags."""

    def __init__(self, weights: dict[str, Any] | str | Path | None = None):
        data: dict[str, Any]
        if weights is None:
            data = json.loads(resources.files("musiclm_pytorch.evaluation").joinpath("judge_weights.json").read_text())
        elif isinstance(weights, dict):
            data = weights
        else:
            data = json.loads(Path(weights).read_text())
        self.meta = data.get("meta", {})
        self.drums = LinearModel.from_json(data["drums"])
        self.family = LinearModel.from_json(data["family"])

    def predict_features(self, feats: dict[str, Any]) -> dict[str, Any]:
        drum_p = float(self.drums.proba(np.asarray(feats["drum_features"]))[0][self.drums.classes.index("True")])
        fam_p = self.family.proba(np.asarray(feats["timbre_features"]))[0]
        return {
            "tempo_bpm": feats["tempo_bpm"],
            "tempo_class": tempo_class(max(feats["tempo_bpm"], 1e-3)),
            "tonic": feats["tonic"],
            "mode": feats["mode"],
            "drums": drum_p >= 0.5,
            "drums_prob": drum_p,
            "family": self.family.classes[int(fam_p.argmax())],
            "family_probs": dict(zip(self.family.classes, fam_p.round(4).tolist())),
        }

    def predict(self, y: np.ndarray, sr: int = SR) -> dict[str, Any]:
        return self.predict_features(extract(y, sr))


def score(pred: dict[str, Any], intended: dict[str, Any]) -> dict[str, bool]:
    """Per-attribute correctness for the attributes ``intended`` states (others are not scored)."""
    out: dict[str, bool] = {}
    if "tempo_bpm" in intended:
        out.update(tempo_scores(pred["tempo_bpm"], float(intended["tempo_bpm"])))
    if "tempo_class" in intended:
        out["tempo_class"] = pred["tempo_class"] == intended["tempo_class"]
    if "tonic" in intended and "mode" in intended:
        out.update(key_scores(pred["tonic"], pred["mode"], intended["tonic"], intended["mode"]))
    elif "mode" in intended:
        out["mode"] = pred["mode"] == intended["mode"]
    if "drums" in intended:
        out["drums"] = bool(pred["drums"]) == bool(intended["drums"])
        # per class too: a model that never makes drums scores the drumless share on "drums" alone
        out["drums_yes" if intended["drums"] else "drums_no"] = out["drums"]
    if "family" in intended:
        out["family"] = pred["family"] == intended["family"]
    return out


def accuracy(scores: list[dict[str, bool]]) -> dict[str, dict[str, float]]:
    """``{attribute: {"accuracy", "n"}}`` over the clips that state it; with prompts both with and without
    drums, ``drums_balanced`` too: the mean of ``drums_yes`` (drums heard where asked) and ``drums_no``
    (none heard where not), 0.5 for a model that always or never makes drums."""
    keys = sorted({k for s in scores for k in s})
    out = {k: {"accuracy": float(np.mean([s[k] for s in scores if k in s])), "n": sum(k in s for s in scores)}
           for k in keys}  # fmt: skip
    if "drums_yes" in out and "drums_no" in out:
        out["drums_balanced"] = {"accuracy": (out["drums_yes"]["accuracy"] + out["drums_no"]["accuracy"]) / 2,
                                 "n": out["drums"]["n"]}  # fmt: skip
    return out
