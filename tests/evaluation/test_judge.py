from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from musiclm_pytorch.evaluation.judge import (
    Judge,
    accuracy,
    estimate_key,
    estimate_tempo,
    fit_linear,
    key_scores,
    score,
    tempo_scores,
)

SR = 16000


def _chord_wave(midis, seconds, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    return sum(np.sin(2 * np.pi * 440 * 2 ** ((m - 69) / 12) * t) for m in midis) / len(midis)


def test_key_of_a_cadence():
    # I - IV - V - I in D major, then i - iv - V - i in F# minor (harmonic minor: E# in V)
    d_major = [[62, 66, 69], [67, 71, 74], [69, 73, 76], [62, 66, 69]]
    fs_minor = [[66, 69, 73], [71, 74, 78], [73, 77, 80], [66, 69, 73]]
    for chords, want in ((d_major, ("D", "major")), (fs_minor, ("F#", "minor"))):
        y = np.concatenate([_chord_wave(c, 1.0) for c in chords]).astype(np.float32)
        tonic, mode, scores = estimate_key(y)
        assert (tonic, mode) == want and scores.shape == (24,)


def test_tempo_of_a_click_track():
    y = np.zeros(SR * 8, np.float32)
    for beat in np.arange(0, 8, 0.5):  # 120 bpm
        i = int(beat * SR)
        y[i : i + 400] = np.random.default_rng(0).standard_normal(400) * np.exp(-np.arange(400) / 60)
    assert estimate_tempo(y) == pytest.approx(120, rel=0.04)


def test_scoring_rules():
    assert tempo_scores(121, 120) == {"tempo": True, "tempo_any_octave": True}
    assert tempo_scores(60, 120) == {"tempo": False, "tempo_any_octave": True}
    assert tempo_scores(80, 120) == {"tempo": False, "tempo_any_octave": True}  # x2/3
    assert tempo_scores(100, 120) == {"tempo": False, "tempo_any_octave": False}
    assert key_scores("A", "minor", "C", "major") == {"key": False, "key_tonic": False, "key_or_relative": True}
    assert key_scores("C", "minor", "C", "major") == {"key": False, "key_tonic": True, "key_or_relative": False}
    assert key_scores("E", "major", "C#", "minor") == {"key": False, "key_tonic": False, "key_or_relative": True}
    pred = {"tempo_bpm": 100.0, "tempo_class": "medium", "tonic": "C", "mode": "major", "drums": True,
            "family": "piano"}  # fmt: skip
    assert score(pred, {"drums": True, "family": "organ"}) == {"drums": True, "drums_yes": True, "family": False}
    assert score(pred, {"mode": "major"}) == {"mode": True}


def test_drums_balanced_is_half_for_a_model_that_never_makes_drums():
    never = {"drums": False}
    scores = [score(never, {"drums": asked}) for asked in (True, False, False, False)]
    acc = accuracy(scores)
    assert acc["drums"] == {"accuracy": 0.75, "n": 4}  # the drumless share, though nothing follows the prompt
    assert acc["drums_yes"] == {"accuracy": 0.0, "n": 1} and acc["drums_no"] == {"accuracy": 1.0, "n": 3}
    assert acc["drums_balanced"] == {"accuracy": 0.5, "n": 4}
    follows = [score({"drums": asked}, {"drums": asked}) for asked in (True, False, False, False)]
    assert accuracy(follows)["drums_balanced"]["accuracy"] == 1.0
    assert "drums_balanced" not in accuracy(scores[1:])  # no prompt asks for drums: undefined


def test_linear_model_matches_sklearn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.standard_normal((90, 5)) + np.repeat(np.eye(3, 5) * 3, 30, axis=0)
    labels = ["a"] * 30 + ["b"] * 30 + ["c"] * 30
    model = fit_linear(x, labels)
    scaler = StandardScaler().fit(x)
    ref = LogisticRegression(max_iter=2000).fit(scaler.transform(x), labels).predict_proba(scaler.transform(x))
    np.testing.assert_allclose(model.proba(x), ref, atol=1e-6)
    binary = fit_linear(x[:60], labels[:60])
    assert binary.proba(x[:60]).shape == (60, 2)


def test_shipped_weights_load_and_record_their_recipe():
    judge = Judge()
    assert "command" in judge.meta and "musiclm eval judge-fit" in judge.meta["command"]
    assert judge.meta["accuracy"]["family"]["n"] >= 100
    assert set(judge.drums.classes) == {"False", "True"} and len(judge.family.classes) == 12


def test_judge_folder_skips_bad_files(tmp_path):
    from musiclm_pytorch.evaluation.judge_fit import judge_folder

    y = np.concatenate([_chord_wave(c, 1.0) for c in ([60, 64, 67], [65, 69, 72], [67, 71, 74], [60, 64, 67])])
    sf.write(tmp_path / "good.wav", y.astype(np.float32) * 0.3, SR)
    (tmp_path / "bad.wav").write_text("nope")
    rows = [{"path": "good.wav", "tags": {"tonic": "C", "mode": "major", "drums": False}},
            {"path": "bad.wav", "tags": {"drums": True}}, {"id": "absent", "tags": {"drums": True}}]  # fmt: skip
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    report = judge_folder(tmp_path / "prompts.jsonl", progress=False)
    assert report["clips"] == 1 and len(report["skipped"]) == 2
    assert report["accuracy"]["key"]["accuracy"] == 1.0 and report["accuracy"]["drums"]["accuracy"] == 1.0


def test_judge_ceiling_on_a_fixed_rendered_set():
    """The judge's accuracy on 24 fresh renders (seed 99, not the calibration seed 1234)."""
    pytest.importorskip("fluidsynth", reason="needs pyfluidsynth + apt fluidsynth (installed by .ci/run)")
    from musiclm_pytorch.evaluation.judge import accuracy
    from musiclm_pytorch.evaluation.judge_fit import calibration_set

    judge = Judge()
    items = calibration_set(num_clips=24, seconds=6.0, seed=99, workers=1, soundfonts=None, bach_fraction=0.0,
                            progress=False)  # fmt: skip
    acc = accuracy([score(judge.predict_features(f), t) for f, t in items])
    got = {k: round(v["accuracy"], 3) for k, v in acc.items()}
    # thresholds sit below the measured values on this set (see benchmarks/RESULTS.md for 239 clips)
    assert got["drums"] >= 0.85, got
    assert got["family"] >= 0.4, got
    assert got["tempo_any_octave"] >= 0.7, got
    assert got["key_or_relative"] >= 0.6, got
