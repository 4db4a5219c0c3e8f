from __future__ import annotations

import pytest
import torch
from torch import nn

from musiclm_pytorch.lm import SamplingConfig, TokenLM
from musiclm_pytorch.lm.quantize import Int8Linear


def test_int8_linear_matches_the_float_product():
    torch.manual_seed(0)
    lin = nn.Linear(256, 96, bias=True)
    x = torch.randn(3, 5, 256)
    q = Int8Linear(lin)
    assert q.weight_int8.dtype == torch.int8 and q.weight_int8.abs().max() == 127  # the full range is used
    ref = lin(x).detach()
    got = q(x).float()
    assert got.shape == ref.shape
    assert float((got - ref).norm() / ref.norm()) < 0.02  # bf16 activations + int8 weights: about 1 %
    # the per-row scale is what keeps small rows exact: a row 1000x smaller is reproduced as well
    with torch.no_grad():
        lin.weight[0] *= 1e-3
    q = Int8Linear(lin)
    small = lin(x)[..., 0].detach()
    assert float((q(x)[..., 0].float() - small).norm() / small.norm()) < 0.02


@pytest.mark.parametrize("inputs", [8, 24, 48])
def test_int8_linear_with_a_narrow_input_matches_the_float_product(inputs):
    # the CPU int8 kernel returns NaN / infinities (or crashes) for 8 or 24 inputs: those take the dequantized path
    torch.manual_seed(0)
    lin = nn.Linear(inputs, 256, bias=False)
    x = torch.randn(4, inputs)
    got = Int8Linear(lin)(x).float()
    ref = lin(x).detach()
    assert torch.isfinite(got).all() and float((got - ref).norm() / ref.norm()) < 0.02


def test_quantized_lm_decodes_like_the_float_one():
    torch.manual_seed(0)
    lm = TokenLM(vocab_size=64, dim=64, depth=2, heads=2, dim_head=32, num_cond=3, cond_vocab=8, dropout=0.0,
                 max_seq_len=40).eval()  # fmt: skip
    tokens, cond = torch.randint(0, 64, (2, 20)), torch.randint(0, 8, (2, 3))
    ref = lm(tokens, cond).float().detach()
    q = TokenLM(**lm.config).eval()
    q.load_state_dict(lm.state_dict())
    q.quantize_int8()
    assert q.quantized and not any(isinstance(m, nn.Linear) for m in q.modules())
    got = q(tokens, cond).float()
    assert float((got - ref).norm() / ref.norm()) < 0.03
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9
    out = q.generate(steps=12, cond_ids=cond, sampling=SamplingConfig(cfg_scale=3.0),
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert out.shape == (2, 12) and int(out.max()) < 64
    with pytest.raises(RuntimeError, match="quantized to int8 for decoding"):
        q.train()(tokens, cond)
