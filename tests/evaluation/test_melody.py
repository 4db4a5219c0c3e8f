from __future__ import annotations

import numpy as np
import pytest

from musiclm_pytorch.evaluation.melody import melody_agreement, pitch_classes, whistled_melody


def test_whistled_melody_reads_back_as_its_notes():
    """The pitch-class reader agrees with a melody of known notes: a C major arpeggio of sines."""
    sr = 16000
    notes = [60, 64, 67, 72, 67, 64]  # C E G C G E, 0.4 s each
    t = np.arange(int(0.4 * sr)) / sr
    y = np.concatenate([np.sin(2 * np.pi * 440 * 2 ** ((n - 69) / 12) * t) for n in notes]).astype(np.float32)
    pc, voiced = pitch_classes(y, sr)
    expected = np.repeat([n % 12 for n in notes], 10)  # 10 frames of 40 ms per note
    inner = np.ones(len(expected), bool)
    inner[np.arange(0, len(expected), 10)] = False  # frames that straddle a note change
    assert voiced.all() and (pc[: len(expected)][inner] == expected[inner]).mean() > 0.95
    m = whistled_melody(3, seconds=2.0)
    assert m.shape == (32000,) and abs(float(np.abs(m).max()) - 0.5) < 1e-6
    assert not np.array_equal(m, whistled_melody(4, seconds=2.0))


def test_melody_agreement_on_the_shipped_model_beats_the_shuffled_control():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from musiclm_pytorch.pipeline import MusicLM

    model = MusicLM.from_pretrained()
    report = melody_agreement(model, ["a solo violin piece", "a slow organ piece", "a piano piece"], seconds=3.0,
                              progress=False)  # fmt: skip
    assert report["prompts"] == 3 and len(report["per_prompt"]) == 3
    assert report["pitch_class_match"] > report["shuffled_melody"] + 0.15, report
