from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from musiclm_pytorch.mulan import DecoupledContrastiveLoss, SigmoidContrastiveLoss, SoftmaxContrastiveLoss


def _latents(b: int = 6, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=-1)
    t = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=-1)
    return a, t


def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def test_infonce_matches_numpy():
    a, t = _latents()
    loss_fn = SoftmaxContrastiveLoss().double()
    s = 1 / 0.07
    logits = s * a.numpy() @ t.numpy().T
    ref = -(np.diag(_np_log_softmax(logits)).mean() + np.diag(_np_log_softmax(logits.T)).mean()) / 2
    assert loss_fn(a, t).item() == pytest.approx(ref, rel=1e-7)
    assert float(loss_fn.temperature) == pytest.approx(0.07)


def test_dcl_matches_numpy_and_drops_the_positive():
    a, t = _latents()
    loss_fn = DecoupledContrastiveLoss().double()
    s = 1 / 0.07
    ref = 0.0
    for logits in (s * a.numpy() @ t.numpy().T, s * t.numpy() @ a.numpy().T):
        for i in range(len(logits)):
            neg = np.delete(logits[i], i)
            ref += (-logits[i, i] + np.log(np.exp(neg).sum())) / len(logits)
    assert loss_fn(a, t).item() == pytest.approx(ref / 2, rel=1e-7)


def test_siglip_matches_numpy():
    a, t = _latents()
    loss_fn = SigmoidContrastiveLoss().double()
    logits = 10.0 * a.numpy() @ t.numpy().T - 10.0
    z = 2 * np.eye(len(logits)) - 1
    ref = np.log1p(np.exp(-z * logits)).sum() / len(logits)
    assert loss_fn(a, t).item() == pytest.approx(ref, rel=1e-7)


def test_temperature_is_learnable_and_clamped():
    loss_fn = SoftmaxContrastiveLoss()
    a, t = _latents()
    loss_fn(a.float(), t.float()).backward()
    assert loss_fn.logit_scale.grad is not None and loss_fn.logit_scale.grad.abs() > 0
    with torch.no_grad():
        loss_fn.logit_scale.fill_(10.0)
    assert float(loss_fn.temperature) == pytest.approx(0.01)  # clamped at logit scale 100


@pytest.mark.parametrize("cls", [SoftmaxContrastiveLoss, DecoupledContrastiveLoss, SigmoidContrastiveLoss])
def test_aligned_pairs_give_lower_loss(cls):
    a, t = _latents(8)
    loss_fn = cls().double()
    assert float(loss_fn(a, a)) < loss_fn(a, t).item()


@pytest.mark.parametrize("cls", [SoftmaxContrastiveLoss, DecoupledContrastiveLoss, SigmoidContrastiveLoss])
def test_bad_batches(cls):
    loss_fn = cls()
    a = F.normalize(torch.randn(1, 8), dim=-1)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        loss_fn(a, a)
    with pytest.raises(ValueError, match=r"\(3, 8\) and \(2, 8\)"):
        loss_fn(torch.randn(3, 8), torch.randn(2, 8))
    assert math.isfinite(float(loss_fn(torch.randn(2, 8), torch.randn(2, 8))))
