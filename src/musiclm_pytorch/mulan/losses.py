"""Contrastive losses for MuLaN, each gathering embeddings across ranks with gradients.

Every loss is the mean of a per-row loss over the *global* batch. Rank ``r`` computes the rows of
its own examples against the columns of every rank (open_clip's "local loss"): with the gradient of
``all_gather`` summing over ranks and DDP / Accelerate averaging parameter gradients, the training
step equals a single-process step on the joint batch (``tests/mulan/test_losses_distributed.py``
proves it with two gloo processes).

- :class:`SoftmaxContrastiveLoss`: symmetric InfoNCE (CLIP; MuLan §3.3) with a learnable temperature,
  ``logit_scale = log(1/T)`` initialised at ``log(1/0.07)`` and clamped to ``[0, log(100)]``.
- :class:`DecoupledContrastiveLoss`: DCL (Yeh et al. 2022): the positive is removed from the
  denominator, which removes InfoNCE's negative-positive coupling at small batch sizes.
- :class:`SigmoidContrastiveLoss`: SigLIP (Zhai et al. 2023): independent binary terms for every pair,
  ``t`` initialised at 10 and bias at -10.

Shapes: latents ``[B, D]``, L2-normalised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: all-gather along dim 0. Backward: sum the gradient over ranks, keep this rank's rows.

    Written out (all_reduce + slice) because it works on every backend, gloo included.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        world = dist.get_world_size()
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        out = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: Tensor) -> tuple[Tensor, int]:
    """All-gather ``x [B, D]`` across ranks keeping the autograd graph.

    Returns ``(x_all [world * B, D], offset)`` where ``offset = rank * B`` is where this rank's rows
    start. Outside ``torch.distributed`` it returns ``(x, 0)``.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    if any(int(s) != x.shape[0] for s in sizes):
        raise ValueError(f"every rank needs the same local batch size, got {[int(s) for s in sizes]}")
    return _AllGatherWithGrad.apply(x), rank * x.shape[0]


def _check_pair(audio: Tensor, text: Tensor) -> None:
    if audio.ndim != 2 or text.ndim != 2 or audio.shape != text.shape:
        raise ValueError(
            f"audio and text latents must both be [B, D] with the same shape, got {tuple(audio.shape)} and "
            f"{tuple(text.shape)}"
        )


def _check_global_batch(n: int) -> None:
    if n < 2:
        raise ValueError(f"a contrastive loss needs at least 2 pairs in the (global) batch to have a negative, got {n}")


@dataclass
class Negatives:
    """Extra columns for the loss, e.g. a feature queue of earlier batches (no gradient).

    ``audio [M, D]`` and ``text [M, D]`` latents and their positive ``keys [M]`` (see ``keys`` below).
    """

    audio: Tensor
    text: Tensor
    keys: Tensor


def _gather_keys(keys: Tensor) -> Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return keys
    out = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
    dist.all_gather(out, keys.contiguous())
    return torch.cat(out)


class _ContrastiveLoss(nn.Module):
    """Rows: this rank's pairs. Columns: every rank's pairs (+ optional extra negatives).

    ``keys [B]`` (int64, optional) makes the target multi-positive: pairs with equal keys describe
    each other (e.g. two clips with the same attributes, or the same caption), so they are positives,
    not negatives. Without keys, only the diagonal is positive.

    ``hard_text [B, D]`` or ``[B, K, D]`` (optional): one (or K) hard negative captions per row, e.g.
    the row's own caption with one attribute changed (``data.captions.perturb_caption``). Each is a
    negative for its own audio only (in the audio -> text direction), since it may well describe
    another clip of the batch; ``hard_mask [B]`` / ``[B, K]`` (bool) marks the ones that exist.
    """

    def forward(
        self,
        audio: Tensor,
        text: Tensor,
        *,
        keys: Tensor | None = None,
        extra: Negatives | None = None,
        hard_text: Tensor | None = None,
        hard_mask: Tensor | None = None,
    ) -> Tensor:
        _check_pair(audio, text)
        if keys is not None and keys.shape != (audio.shape[0],):
            raise ValueError(f"keys must be [B] = [{audio.shape[0]}], got shape {tuple(keys.shape)}")
        hard = None
        if hard_text is not None:
            if hard_text.shape[:1] + hard_text.shape[-1:] != audio.shape or hard_text.ndim not in (2, 3):
                raise ValueError(f"hard_text must be [B, D] or [B, K, D] with [B, D] = {tuple(audio.shape)}, "
                                 f"got {tuple(hard_text.shape)}")  # fmt: skip
            hard_text = hard_text if hard_text.ndim == 3 else hard_text[:, None]
            hard_sim = (audio[:, None] * hard_text).sum(-1)  # [B, K]
            valid = torch.ones_like(hard_sim, dtype=torch.bool)
            if hard_mask is not None:
                if hard_mask.numel() != hard_sim.numel():
                    raise ValueError(f"hard_mask must have one flag per hard negative {tuple(hard_sim.shape)}, "
                                     f"got {tuple(hard_mask.shape)}")  # fmt: skip
                valid = hard_mask.reshape(hard_sim.shape).to(hard_sim.device, torch.bool)
            hard = (hard_sim, valid)
        audio_all, offset = gather_with_grad(audio)
        text_all, _ = gather_with_grad(text)
        _check_global_batch(audio_all.shape[0])
        rows = torch.arange(audio.shape[0], device=audio.device)
        pos = torch.zeros(audio.shape[0], audio_all.shape[0], dtype=torch.bool, device=audio.device)
        pos[rows, rows + offset] = True
        if keys is not None:
            pos |= keys[:, None] == _gather_keys(keys)[None, :]
        if extra is not None and extra.audio.shape[0]:
            audio_all = torch.cat([audio_all, extra.audio.to(audio_all)])
            text_all = torch.cat([text_all, extra.text.to(text_all)])
            local_keys = keys if keys is not None else torch.full_like(rows, -1)
            extra_pos = local_keys[:, None] == extra.keys.to(local_keys.device)[None, :]
            extra_pos &= local_keys[:, None] >= 0
            pos = torch.cat([pos, extra_pos], dim=1)
        return self.local_loss(audio, text, audio_all, text_all, pos, hard)

    def local_loss(
        self,
        audio: Tensor,
        text: Tensor,
        audio_all: Tensor,
        text_all: Tensor,
        pos: Tensor,
        hard: tuple[Tensor, Tensor] | None,
    ) -> Tensor:
        raise NotImplementedError


class SoftmaxContrastiveLoss(_ContrastiveLoss):
    """Symmetric InfoNCE with a learnable, clamped temperature.

    Multi-positive form (MIL-NCE): ``-log(sum_pos exp(s_ij) / sum_all exp(s_ij))``; with one
    positive per row it is the usual cross-entropy.
    """

    def __init__(self, *, init_temperature: float = 0.07, max_logit_scale: float = 100.0):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_log_scale = math.log(max_logit_scale)

    @property
    def temperature(self) -> Tensor:
        return 1.0 / self.scale()

    def scale(self) -> Tensor:
        # clamp with gradient pass-through inside the range, as CLIP clamps logit_scale
        return self.logit_scale.clamp(0.0, self.max_log_scale).exp()

    def _row_loss(self, logits: Tensor, pos: Tensor) -> Tensor:
        return torch.logsumexp(logits, dim=1) - torch.logsumexp(logits.masked_fill(~pos, float("-inf")), dim=1)

    def local_loss(
        self,
        audio: Tensor,
        text: Tensor,
        audio_all: Tensor,
        text_all: Tensor,
        pos: Tensor,
        hard: tuple[Tensor, Tensor] | None,
    ) -> Tensor:
        s = self.scale()
        a2t = s * audio @ text_all.t()  # local audio rows vs every text
        t2a = s * text @ audio_all.t()
        a2t_pos = pos
        if hard is not None:  # K more columns per audio row: its own hard negative captions
            hard_sim, valid = hard  # missing ones become -inf logits after scaling (no 0 * inf in the grad)
            a2t = torch.cat([a2t, (s * hard_sim).masked_fill(~valid, float("-inf"))], dim=1)
            a2t_pos = torch.cat([pos, torch.zeros_like(pos[:, :1]).expand(-1, hard_sim.shape[1])], dim=1)
        return (self._row_loss(a2t, a2t_pos).mean() + self._row_loss(t2a, pos).mean()) / 2


class DecoupledContrastiveLoss(SoftmaxContrastiveLoss):
    """DCL: InfoNCE without the positives in the denominator."""

    def _row_loss(self, logits: Tensor, pos: Tensor) -> Tensor:
        neg = logits.masked_fill(pos, float("-inf"))
        return torch.logsumexp(neg, dim=1) - torch.logsumexp(logits.masked_fill(~pos, float("-inf")), dim=1)


class SigmoidContrastiveLoss(_ContrastiveLoss):
    """SigLIP: ``-log sigmoid(z_ij (t * a_i.t_j + b))`` summed over columns, averaged over rows."""

    def __init__(self, *, init_scale: float = 10.0, init_bias: float = -10.0):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(init_bias))

    @property
    def temperature(self) -> Tensor:
        return 1.0 / self.logit_scale.exp()

    def local_loss(
        self,
        audio: Tensor,
        text: Tensor,
        audio_all: Tensor,
        text_all: Tensor,
        pos: Tensor,
        hard: tuple[Tensor, Tensor] | None,
    ) -> Tensor:
        logits = self.logit_scale.exp() * audio @ text_all.t() + self.logit_bias
        signs = pos.to(logits.dtype) * 2 - 1
        loss = -F.logsigmoid(signs * logits).sum(dim=1)
        if hard is not None:
            hard_sim, valid = hard
            hard_logits = self.logit_scale.exp() * hard_sim + self.logit_bias
            loss = loss - (F.logsigmoid(-hard_logits) * valid).sum(dim=1)
        return loss.mean()


LOSSES: dict[str, type[_ContrastiveLoss]] = {
    "softmax": SoftmaxContrastiveLoss,
    "dcl": DecoupledContrastiveLoss,
    "sigmoid": SigmoidContrastiveLoss,
}
