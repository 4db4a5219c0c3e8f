from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from musiclm_pytorch.evaluation.acoustic_oracle import _swapped, acoustic_oracle, knn_prior


class _ToneCodec:
    """Duck-typed codec: each frame of level 0 is a tone whose pitch is its code (levels above add nothing)."""

    sample_rate, frame_rate, num_quantizers, codebook_size = 16000, 50.0, 2, 8

    def eval(self):
        return self

    def decode(self, codes):
        t = torch.arange(320) / 16000
        freq = 220.0 * 2 ** (codes[:, 0].float() / 12)  # [B, T]
        return (0.3 * torch.sin(2 * torch.pi * freq[..., None] * t)).reshape(codes.shape[0], 1, -1)


class _CopyStage:
    """Makes the clip's own codes whatever the conditioning (``wrong``: other codes)."""

    num_quantizers, ratio = 2, 2

    def __init__(self, table, wrong=False):
        self.table, self.wrong = table, wrong
        self.conds = []

    def eval(self):
        return self

    def generate(self, semantic, cond, **kwargs):
        self.conds.append(cond)
        codes = torch.stack([self.table[tuple(row.tolist())] for row in semantic])
        return (codes + 3) % 8 if self.wrong else codes


def _items(n=4):
    gen = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        sem = torch.full((25,), i) + torch.arange(25) * 0
        items.append(
            {
                "semantic": sem,
                "codes": torch.full((2, 50), 2 * i),
                "mulan": F.normalize(torch.randn(128, generator=gen), dim=0),
            }
        )
    return items


def test_a_stage_that_makes_the_true_codes_reaches_the_ceiling(tiny_mulan):
    items = _items()
    table = {tuple(it["semantic"].tolist()): it["codes"] for it in items}
    texts = ["a calm piano piece", "fast guitar", "a slow flute melody", "organ music with drums"]
    tags = [{"family": "piano", "instrument": "acoustic grand piano", "drums": False},
            {"family": "guitar", "instrument": "nylon-string guitar", "drums": False},
            {"family": "pipe", "instrument": "flute", "drums": False},
            {"family": "organ", "instrument": "church organ", "drums": True}]  # fmt: skip
    stage = _CopyStage(table)
    bank = F.normalize(torch.randn(10, 128), dim=-1)
    report = acoustic_oracle(stage=stage, codec=_ToneCodec(), mulan=tiny_mulan, items=items, texts=texts, tags=tags,
                             bank=bank, knn=3)  # fmt: skip
    for name in ("from_text", "from_audio", "null", "from_text_knn"):
        assert report[name] == report["codec_ceiling"]  # the same audio, the same scores
    assert report["clips"] == 4 and report["seconds"] == 1.0
    assert report["caption_swap"]["clips"] >= 2  # captions that name their instrument or family
    # the stage saw: text latents, the clips' own latents, None, the kNN prior, the swapped captions' latents
    assert torch.equal(stage.conds[1], torch.stack([it["mulan"] for it in items])) and stage.conds[2] is None
    assert torch.allclose(stage.conds[0], tiny_mulan.get_text_latents(raw_texts=texts))
    wrong = acoustic_oracle(stage=_CopyStage(table, wrong=True), codec=_ToneCodec(), mulan=tiny_mulan, items=items,
                            texts=texts, tags=tags)  # fmt: skip
    assert wrong["codec_ceiling"] == report["codec_ceiling"] and wrong["from_text"] != report["codec_ceiling"]
    with pytest.raises(ValueError, match="at least 2 items"):
        acoustic_oracle(stage=stage, codec=_ToneCodec(), mulan=tiny_mulan, items=items[:1], texts=texts[:1],
                        tags=tags[:1])  # fmt: skip


def test_caption_swap_and_knn_prior():
    texts, tags = _swapped(
        ["Solo trombone, melancholic", "calm music"],
        [{"family": "brass", "instrument": "trombone"}, {"family": "piano", "instrument": "acoustic grand piano"}],
        0,
    )
    assert "trombone" not in texts[0] and tags[0]["family"] != "brass" and tags[0]["instrument"] in texts[0]
    assert texts[1] == "calm music" and tags[1]["family"] == "piano"  # names neither: kept as it was
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=-1)
    prior = knn_prior(torch.tensor([[1.0, 0.0]]), bank, 2)
    assert torch.allclose(prior, F.normalize(bank[:2].mean(0, keepdim=True), dim=-1))
