from __future__ import annotations

import pytest
import torch

from musiclm_pytorch.lm.layouts import CoarseLayout, FineLayout, SemanticLayout, check_codec_contract


def test_coarse_round_trip_offsets_and_mask():
    layout = CoarseLayout(semantic_vocab=10, codebook_size=4, num_coarse=3)
    assert layout.vocab_size == 22
    semantic = torch.tensor([[1, 9]])
    codes = torch.tensor([[[0, 3], [1, 2], [3, 0]]])  # [B, Q=3, T=2]
    tokens, mask = layout.flatten(semantic, codes)
    # frame 1: levels 1, 2, 3 then frame 2, each shifted by 10 + 4q
    assert tokens.tolist() == [[1, 9, 10, 15, 21, 13, 16, 18]]
    assert mask.tolist() == [[False, False, True, True, True, True, True, True]]
    assert torch.equal(layout.unflatten(tokens[:, 2:]), codes)
    allowed = layout.allowed(2)
    assert allowed.shape == (6, 22) and allowed[1, 14:18].all() and allowed[1].sum() == 4 and not allowed[1, 10]
    assert layout.groups == [10, 4, 4, 4]  # the id ranges: semantic, then each level (offsets 10, 14, 18)
    assert FineLayout(codebook_size=4, num_coarse=2, num_fine=3).groups == [4] * 5
    assert SemanticLayout(semantic_vocab=10).groups == [10]


def test_fine_round_trip_and_errors():
    layout = FineLayout(codebook_size=4, num_coarse=2, num_fine=2)
    codes = torch.randint(0, 4, (2, 4, 5))
    tokens, mask = layout.flatten(codes)
    assert tokens.shape == (2, 20) and int(tokens.max()) < 16
    assert mask[0, :4].tolist() == [False, False, True, True]
    assert torch.equal(layout.unflatten(tokens), codes)
    with pytest.raises(ValueError, match=r"codes must be in \[0, 4\)"):
        layout.flatten(torch.full((1, 4, 2), 4))
    with pytest.raises(ValueError, match=r"\[B, 4, T\]"):
        layout.flatten(torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="semantic ids must be in"):
        SemanticLayout(8).flatten(torch.tensor([[8]]))


def test_codec_contract_names_both_sides():
    check_codec_contract(CoarseLayout(10, 1024, 4), codebook_size=1024, num_quantizers=12)
    with pytest.raises(ValueError, match="stage codebook_size=1024 but the codec's codebook_size=512"):
        check_codec_contract(CoarseLayout(10, 1024, 4), codebook_size=512, num_quantizers=12)
    with pytest.raises(ValueError, match="needs 12 codec levels but the codec has num_quantizers=8"):
        check_codec_contract(FineLayout(1024, 4, 8), codebook_size=1024, num_quantizers=8)
