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
    assert loss_fn.temperature.item() == pytest.approx(0.07)


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
    assert loss_fn.temperature.item() == pytest.approx(0.01)  # clamped at logit scale 100


@pytest.mark.parametrize("cls", [SoftmaxContrastiveLoss, DecoupledContrastiveLoss, SigmoidContrastiveLoss])
def test_aligned_pairs_give_lower_loss(cls):
    a, t = _latents(8)
    loss_fn = cls().double()
    assert loss_fn(a, a).item() < loss_fn(a, t).item()


@pytest.mark.parametrize("cls", [SoftmaxContrastiveLoss, DecoupledContrastiveLoss, SigmoidContrastiveLoss])
def test_bad_batches(cls):
    loss_fn = cls()
    a = F.normalize(torch.randn(1, 8), dim=-1)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        loss_fn(a, a)
    with pytest.raises(ValueError, match=r"\(3, 8\) and \(2, 8\)"):
        loss_fn(torch.randn(3, 8), torch.randn(2, 8))
    assert math.isfinite(loss_fn(torch.randn(2, 8), torch.randn(2, 8)).item())


def test_multi_positive_matches_numpy_and_distinct_keys_change_nothing():
    a, t = _latents(6)
    loss_fn = SoftmaxContrastiveLoss().double()
    plain = loss_fn(a, t).item()
    assert loss_fn(a, t, keys=torch.arange(6)).item() == pytest.approx(plain, rel=1e-12)
    keys = torch.tensor([0, 1, 0, 2, 1, 3])
    s = 1 / 0.07
    pos = keys.numpy()[:, None] == keys.numpy()[None, :]
    ref = 0.0
    for logits in (s * a.numpy() @ t.numpy().T, s * t.numpy() @ a.numpy().T):
        lse_all = np.log(np.exp(logits).sum(1))
        lse_pos = np.log((np.exp(logits) * pos).sum(1))
        ref += (lse_all - lse_pos).mean() / 2
    assert loss_fn(a, t, keys=keys).item() == pytest.approx(ref, rel=1e-7)
    with pytest.raises(ValueError, match=r"keys must be \[B\]"):
        loss_fn(a, t, keys=torch.arange(5))


@pytest.mark.parametrize("cls", [SoftmaxContrastiveLoss, DecoupledContrastiveLoss, SigmoidContrastiveLoss])
def test_queue_adds_negatives_and_positives(cls):
    from musiclm_pytorch.mulan.losses import Negatives

    a, t = _latents(4)
    qa, qt = _latents(3, seed=1)
    loss_fn = cls().double()
    base = loss_fn(a, t, keys=torch.arange(4)).item()
    neg = Negatives(audio=qa, text=qt, keys=torch.tensor([10, 11, 12]))
    with_neg = loss_fn(a, t, keys=torch.arange(4), extra=neg).item()
    assert with_neg != pytest.approx(base)
    # a queued copy of pair 0 with row 0's key is a positive for row 0, not a negative
    same = Negatives(audio=a[:1].repeat(3, 1), text=t[:1].repeat(3, 1), keys=torch.tensor([0, 0, 0]))
    other = Negatives(audio=a[:1].repeat(3, 1), text=t[:1].repeat(3, 1), keys=torch.tensor([9, 9, 9]))
    keys = torch.arange(4)
    diff = loss_fn(a, t, keys=keys, extra=same).item() - loss_fn(a, t, keys=keys, extra=other).item()
    if cls is SigmoidContrastiveLoss:  # -log sig(z) + log sig(-z) = -z per relabelled column; row 0 of 4
        z0 = (10.0 * a[0] @ t[0] - 10.0).item()
        assert diff == pytest.approx(-3 * z0 / 4, rel=1e-6)
    else:  # softmax-type: more positive mass can only lower the loss
        assert diff < 0


def test_hard_negative_caption_matches_numpy_and_is_per_row():
    a, t = _latents(4)
    h = F.normalize(a + 0.1 * t, dim=-1)  # close to the audio: a hard negative
    loss_fn = SoftmaxContrastiveLoss().double()
    s = 1 / 0.07
    logits = s * a.numpy() @ t.numpy().T
    a2t = np.concatenate([logits, s * (a.numpy() * h.numpy()).sum(1, keepdims=True)], axis=1)  # own column
    ref = -(np.diag(_np_log_softmax(a2t)[:, :4]).mean() + np.diag(_np_log_softmax(logits.T)).mean()) / 2
    assert loss_fn(a, t, hard_text=h).item() == pytest.approx(ref, rel=1e-7)
    # masked rows have no hard negative: with every row masked it is the plain loss
    none = torch.zeros(4, dtype=torch.bool)
    assert loss_fn(a, t, hard_text=h, hard_mask=none).item() == pytest.approx(loss_fn(a, t).item(), rel=1e-9)
    with pytest.raises(ValueError, match=r"hard_text must be \[B, D\]"):
        loss_fn(a, t, hard_text=h[:2])


@pytest.mark.parametrize("cls", [SoftmaxContrastiveLoss, SigmoidContrastiveLoss])
def test_several_hard_negatives_per_row(cls):
    a, t = _latents(4)
    h1, h2 = F.normalize(a + 0.1 * t, dim=-1), F.normalize(a - 0.2 * t, dim=-1)
    loss_fn = cls().double()
    both = loss_fn(a, t, hard_text=torch.stack([h1, h2], dim=1))
    assert loss_fn(a, t, hard_text=h1[:, None]).item() == pytest.approx(loss_fn(a, t, hard_text=h1).item(), rel=1e-12)
    assert both.item() > loss_fn(a, t, hard_text=h1).item()  # the second negative adds to the loss
    # a masked second negative is none at all
    mask = torch.tensor([[True, False]] * 4)
    masked = loss_fn(a, t, hard_text=torch.stack([h1, h2], dim=1), hard_mask=mask)
    assert masked.item() == pytest.approx(loss_fn(a, t, hard_text=h1).item(), rel=1e-12)
    if cls is SoftmaxContrastiveLoss:  # against numpy: two extra columns per audio row
        s = 1 / 0.07
        logits = s * a.numpy() @ t.numpy().T
        extra = [s * (a.numpy() * h.numpy()).sum(1, keepdims=True) for h in (h1, h2)]
        a2t = np.concatenate([logits, *extra], axis=1)
        ref = -(np.diag(_np_log_softmax(a2t)[:, :4]).mean() + np.diag(_np_log_softmax(logits.T)).mean()) / 2
        assert both.item() == pytest.approx(ref, rel=1e-7)
    # missing negatives give finite gradients everywhere, the temperature's included
    a = a.clone().requires_grad_(True)
    loss_fn(a, t, hard_text=torch.stack([h1, h2], dim=1), hard_mask=mask).backward()
    grads = [a.grad, *(p.grad for p in loss_fn.parameters())]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    with pytest.raises(ValueError, match="one flag per hard negative"):
        loss_fn(a, t, hard_text=torch.stack([h1, h2], dim=1), hard_mask=torch.ones(4, dtype=torch.bool))


@pytest.mark.parametrize("cls", [SoftmaxContrastiveLoss, DecoupledContrastiveLoss, SigmoidContrastiveLoss])
def test_hard_negatives_push_the_audio_away_from_them(cls):
    a, t = _latents(4)
    h = F.normalize(a + 0.1 * t, dim=-1).detach()
    loss_fn = cls().double()
    assert loss_fn(a, t, hard_text=h).item() > loss_fn(a, t).item()
    a = a.clone().requires_grad_(True)
    loss_fn(a, t, hard_text=h).backward()
    # a gradient step moves each audio latent away from its hard negative
    assert ((a - 0.01 * a.grad) * h).sum(1).lt((a * h).sum(1)).all()
