from __future__ import annotations

import numpy as np
import pytest
import torch

from musiclm_pytorch import load, save
from musiclm_pytorch.semantic import MusicalFeatureExtractor, SemanticTokenizer

SR = 16000


def _notes(midis, seconds_each=0.5, timbre="sine"):
    t = np.arange(int(SR * seconds_each)) / SR
    out = []
    for m in midis:
        f = 440 * 2 ** ((m - 69) / 12)
        w = np.sin(2 * np.pi * f * t)
        if timbre == "square":
            w = np.sign(w) * 0.5
        out.append(w * np.exp(-t * 3))
    return np.concatenate(out).astype(np.float32) * 0.3


def test_features_rate_and_pitch_class():
    ext = MusicalFeatureExtractor(sample_rate=SR)
    feats = ext(_notes([69] * 4))  # A4 for 2 s
    assert feats.shape == (50, 27)
    assert feats[5:45, :12].mean(0).argmax() == 9  # chroma peaks at A
    with pytest.raises(ValueError, match="shorter than one 640-sample frame"):
        ext(np.zeros(100, np.float32))


def test_tokens_follow_pitch_more_than_timbre(tmp_path):
    torch.manual_seed(0)
    melodies = [[60, 64, 67, 72], [62, 65, 69, 74], [57, 60, 64, 69], [59, 62, 67, 71]]
    train = [torch.from_numpy(_notes(m, timbre=t)) for m in melodies for t in ("sine", "square")]
    tok = SemanticTokenizer(sample_rate=SR, vocab_size=16)
    stats = tok.fit([torch.stack(train[i : i + 4]) for i in range(0, 8, 4)])
    assert stats["used_fraction"] > 0.5
    ids = tok(torch.stack([torch.from_numpy(_notes(melodies[0], timbre=t)) for t in ("sine", "square")]))
    assert ids.shape == (2, 50)
    other = tok(torch.from_numpy(_notes(melodies[3]))[None])
    same_melody = (ids[0] == ids[1]).float().mean()  # same notes, other timbre
    other_melody = (ids[0] == other[0]).float().mean()  # same timbre, other notes
    assert same_melody > other_melody
    loaded = load(save(tok, tmp_path / "sem.safetensors"))
    assert torch.equal(loaded(torch.stack(train[:2])), tok(torch.stack(train[:2])))
    tok.usage_png(ids, tmp_path / "usage.png")
    assert (tmp_path / "usage.png").stat().st_size > 1000


def test_unfitted_error():
    with pytest.raises(RuntimeError, match="not fitted"):
        SemanticTokenizer(vocab_size=4)(torch.zeros(1, SR))
