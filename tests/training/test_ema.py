from __future__ import annotations

import pytest
import torch
from torch import nn

from musiclm_pytorch.training.common import EMA


def test_ema_follows_the_formula_and_skips_frozen_weights():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    model[0].bias.requires_grad_(False)  # frozen: shared, never averaged
    ema = EMA(model, decay=0.5)
    start = model[0].weight.detach().clone()
    expected = start.clone()
    for n in range(1, 4):
        with torch.no_grad():
            model[0].weight.add_(1.0)
            model[0].bias.add_(1.0)
        model.train()(torch.randn(4, 3))  # moves the BatchNorm running stats (buffers are copied)
        ema.update(model)
        d = min(0.5, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * model[0].weight.detach()
    assert torch.allclose(ema.model[0].weight, expected)
    assert not torch.allclose(ema.model[0].weight, model[0].weight)
    assert torch.allclose(ema.model[0].bias, model[0].bias - 3.0)  # untouched copy of the frozen weight
    assert torch.equal(ema.model[1].running_mean, model[1].running_mean)
    assert not any(p.requires_grad for p in ema.model.parameters()) and not ema.model.training

    other = EMA(model, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 3 and torch.equal(other.model[0].weight, ema.model[0].weight)
    with pytest.raises(ValueError, match=r"EMA state lacks 3 trained weights.*0\.weight"):
        other.load_state_dict({"num_updates": 1, "decay": 0.5, "weights": {}})
    with pytest.raises(ValueError, match="decay must be in"):
        EMA(model, decay=1.0)
