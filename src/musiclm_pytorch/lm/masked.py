"""A parallel, frame-aligned acoustic stage: semantic ids + MuLaN embedding -> every codec level.

Why it exists beside the paper's coarse + fine token LMs (benchmarks/RESULTS.md, "An acoustic stage
that reads its conditioning"): in the AudioLM layout an acoustic LM sees the semantic ids as a prefix
and must learn through attention which prefix position belongs to which acoustic token, one token per
step (10 s: 250 ids, then 1,500 coarse tokens, then the fine ones), with the MuLaN tokens as a prefix
further away. On CPU budgets those stages never learned to read the conditioning. Here, as in
SoundStorm (Borsos et al. 2023, section 3), the alignment is given, not learned, and decoding is
parallel:

- Input per codec frame ``t``: the embedding of the semantic id that covers it (``t // ratio``), the
  sum of one embedding per codec level (the level's code, or that level's MASK id), the embedding of
  the level being predicted, and the conditioning: a projection of the *continuous* MuLaN embedding
  (zero-initialised, so it starts as a no-op) or a learned null vector. A bidirectional transformer
  (RoPE, SDPA) and one output head per level.
- Training (SoundStorm's masking): per example draw a level ``q``; levels below ``q`` are given,
  levels above are masked, and of level ``q`` a share ``cos(u * pi / 2)`` (``u ~ U(0, 1)``) of the
  frames is masked (all of them with probability ``full_mask_prob``: generation's first round of
  every level sees the level fully masked, and only there must the conditioning, not the visible
  codes of the same level, say what the music is); the loss is the cross-entropy on the masked frames.
  The conditioning is dropped (null) with probability ``cond_drop_prob`` and perturbed by Gaussian
  noise of scale up to ``cond_noise`` (then re-normalised), so a text embedding, which lies near but
  not on the audio embeddings, is not an unseen input at generation.
- Generation: level by level; the first level by confidence-based iterative unmasking (MaskGIT,
  Chang et al. 2022) in ``steps[0]`` rounds, the others in ``steps[q]`` rounds (default 1: greedy),
  classifier-free guidance with the conditioned and null rows in one batched forward.

Shape letters: B batch, T codec frames, Ts semantic frames, Q levels, K codebook size, D model dim,
C conditioning dim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .frame_aligned import FrameAlignedStage
from .transformer import filter_logits


class MaskedAcousticLM(FrameAlignedStage):
    """Bidirectional masked token model over all codec levels (module docstring).

    Args:
        semantic_vocab: semantic ids.
        codebook_size, num_quantizers: the codec's levels this stage makes.
        ratio: codec frames per semantic frame (50 Hz / 25 Hz = 2).
        cond_dim: size of the conditioning embedding (MuLaN: 128).
        dim, depth, heads, dim_head, ff_hidden, dropout: transformer sizes.
        cond_drop_prob: probability of the null condition per training example (guidance).
        cond_noise: largest per-dimension std of the Gaussian noise added to the (unit) conditioning in
            training, drawn uniformly per example; 0 disables.
        prior_size, prior_k: training audio latents kept for the text prior, and how many are averaged
            (:mod:`.frame_aligned`); 0: generation from text uses the text latent itself.
    """

    component_name = "masked_acoustic_lm"

    def __init__(
        self, *, semantic_vocab: int, codebook_size: int, num_quantizers: int, ratio: int = 2, cond_dim: int = 128,
        dim: int = 256, depth: int = 6, heads: int = 4, dim_head: int = 64, ff_hidden: int | None = None,
        dropout: float = 0.1, cond_drop_prob: float = 0.1, cond_noise: float = 0.0,
        prior_size: int = 0, prior_k: int = 8, full_mask_prob: float = 0.2,
    ):  # fmt: skip
        super().__init__()
        ff_hidden = ff_hidden or 4 * dim
        self.save_config(
            semantic_vocab=semantic_vocab, codebook_size=codebook_size, num_quantizers=num_quantizers, ratio=ratio,
            cond_dim=cond_dim, dim=dim, depth=depth, heads=heads, dim_head=dim_head, ff_hidden=ff_hidden,
            dropout=dropout, cond_drop_prob=cond_drop_prob, cond_noise=cond_noise, full_mask_prob=full_mask_prob,
            prior_size=prior_size, prior_k=prior_k,
        )  # fmt: skip
        if not 0.0 <= full_mask_prob <= 1.0:
            raise ValueError(f"need 0 <= full_mask_prob <= 1, got {full_mask_prob}")
        self._init_trunk(semantic_vocab=semantic_vocab, ratio=ratio, cond_dim=cond_dim, dim=dim, depth=depth,
                         heads=heads, dim_head=dim_head, ff_hidden=ff_hidden, dropout=dropout,
                         cond_drop_prob=cond_drop_prob, cond_noise=cond_noise, prior_size=prior_size,
                         prior_k=prior_k)  # fmt: skip
        self.codebook_size, self.num_quantizers, self.full_mask_prob = codebook_size, num_quantizers, full_mask_prob
        self.mask_id = codebook_size  # each level's last id
        self.code_emb = nn.Embedding(num_quantizers * (codebook_size + 1), dim)
        self.register_buffer("code_offsets", torch.arange(num_quantizers) * (codebook_size + 1), persistent=False)
        self.level_emb = nn.Embedding(num_quantizers, dim)
        self.heads_out = nn.Parameter(torch.randn(num_quantizers, codebook_size, dim) * dim**-0.5)

    code_offsets: Tensor

    # ---- inputs ------------------------------------------------------------------------------------
    def _check(self, semantic: Tensor, codes: Tensor, cond: Tensor | None) -> None:
        b, q, t = codes.shape
        if q != self.num_quantizers:
            raise ValueError(f"codes must be [B, {self.num_quantizers}, T], got shape {tuple(codes.shape)}")
        if semantic.ndim != 2 or semantic.shape[0] != b or semantic.shape[1] * self.ratio < t:
            raise ValueError(f"semantic must be [B={b}, Ts >= T / {self.ratio} = {math.ceil(t / self.ratio)}], got "
                             f"shape {tuple(semantic.shape)}")  # fmt: skip
        self._check_semantic(semantic)
        if int(codes.min()) < 0 or int(codes.max()) > self.mask_id:
            raise ValueError(f"codes must be in [0, {self.codebook_size}] ({self.mask_id} = masked), got "
                             f"[{int(codes.min())}, {int(codes.max())}]")  # fmt: skip
        if cond is not None and cond.shape != (b, self.cond_dim):
            raise ValueError(f"cond must be [B={b}, {self.cond_dim}], got shape {tuple(cond.shape)}")

    def forward(self, semantic: Tensor, codes: Tensor, cond: Tensor | None, level: Tensor, *,
                drop: Tensor | None = None) -> Tensor:  # fmt: skip
        """Logits ``[B, T, K]`` of level ``level [B]`` at every frame, given ``semantic [B, Ts]``, ``codes
        [B, Q, T]`` (``mask_id`` where unknown) and ``cond [B, C]`` (or ``None``: null)."""
        self._check(semantic, codes, cond)
        b, _, t = codes.shape
        sem = semantic.long().repeat_interleave(self.ratio, dim=1)[:, :t]
        x = self.semantic_emb(sem) + self.code_emb(codes.long() + self.code_offsets[None, :, None]).sum(1)
        x = x + (self.level_emb(level) + self.condition(cond, b, drop=drop))[:, None]
        return torch.einsum("btd,bkd->btk", self._transform(x), self.heads_out[level])

    # ---- training ----------------------------------------------------------------------------------
    def training_inputs(
        self, semantic: Tensor, codes: Tensor, cond: Tensor | None, *, generator: torch.Generator | None = None
    ) -> tuple[dict[str, Any], Tensor, Tensor]:
        """SoundStorm's masking of ``codes [B, Q, T]`` (all known) on a random level per row: ``(inputs,
        target, truth)``, the keyword arguments of :meth:`forward` (``semantic``, masked ``codes``,
        ``cond``, ``level``, ``drop``), the masked frames of the predicted level (bool ``[B, T]``) and that
        level's codes ``[B, T]``. In training mode the conditioning gets its noise and dropout."""
        b, q, t = codes.shape
        device = codes.device
        level = torch.randint(q, (b,), generator=generator).to(device)
        share = torch.cos(torch.rand(b, generator=generator) * math.pi / 2)
        share = torch.where(torch.rand(b, generator=generator) < self.full_mask_prob, 1.0, share).to(device)
        count = (share * t).ceil().clamp(1, t).long()  # frames of level q to mask, per row
        rank = torch.rand(b, t, generator=generator).to(device).argsort(1).argsort(1)
        target = rank < count[:, None]  # [B, T]: masked frames of the predicted level
        levels = torch.arange(q, device=device)[None, :, None]
        masked = (levels > level[:, None, None]) | ((levels == level[:, None, None]) & target[:, None])
        drop = None
        if cond is not None and self.training:  # noise and dropout in training only: evaluation is exact
            cond = self.noisy(cond, generator)
            drop = (torch.rand(b, generator=generator) < self.cond_drop_prob).to(device)
        truth = codes.gather(1, level[:, None, None].expand(b, 1, t))[:, 0]
        inputs = {"semantic": semantic, "codes": codes.masked_fill(masked, self.mask_id), "cond": cond,
                  "level": level, "drop": drop}  # fmt: skip
        return inputs, target, truth

    def loss(self, semantic: Tensor, codes: Tensor, cond: Tensor | None, *,
             generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        """The masked cross-entropy of :meth:`training_inputs` (one forward)."""
        inputs, target, truth = self.training_inputs(semantic, codes, cond, generator=generator)
        logits = self(**inputs)
        return F.cross_entropy(logits[target].float(), truth[target].long())

    # ---- generation --------------------------------------------------------------------------------
    def _guided(self, semantic: Tensor, codes: Tensor, cond: Tensor | None, level: int, cfg_scale: float) -> Tensor:
        b = codes.shape[0]
        lv = torch.full((b,), level, device=codes.device, dtype=torch.long)
        if cond is None or cfg_scale == 1.0:
            return self(semantic, codes, cond, lv).float()
        both = self(torch.cat([semantic, semantic]), torch.cat([codes, codes]), torch.cat([cond, cond]),
                    torch.cat([lv, lv]), drop=torch.arange(2 * b, device=codes.device) >= b).float()  # fmt: skip
        with_cond, null = both[:b], both[b:]
        return null + cfg_scale * (with_cond - null)

    @torch.no_grad()
    def generate(
        self, semantic: Tensor, cond: Tensor | None = None, *, frames: int | None = None,
        steps: Sequence[int] = (8,), cfg_scale: float = 1.0, temperature: float = 1.0, top_k: int = 0,
        prompt: Tensor | None = None, generator: torch.Generator | None = None,
    ) -> Tensor:  # fmt: skip
        """Codes ``[B, Q, T]`` for ``semantic [B, Ts]`` (``T = frames`` or ``Ts * ratio``).

        ``steps``: unmasking rounds per level (the last value repeats: ``(8,)`` is 8 for every level,
        ``(8, 1)`` SoundStorm's 8 then 1). ``temperature`` applies to the sampling of every round (0:
        greedy); the order of unmasking follows the sampled tokens' probabilities (most confident
        first), with Gumbel noise of scale ``temperature * (1 - progress)`` (MaskGIT).
        ``prompt [B, Q', T0]``: the first ``T0`` frames of the first ``Q'`` levels are given (continuation)."""
        was_training = self.training
        self.eval()
        b = semantic.shape[0]
        t = frames or semantic.shape[1] * self.ratio
        device = self.null_cond.device
        semantic = semantic.to(device)
        cond = cond.to(device) if cond is not None else None
        codes = torch.full((b, self.num_quantizers, t), self.mask_id, dtype=torch.long, device=device)
        if prompt is not None:
            codes[:, : prompt.shape[1], : prompt.shape[2]] = prompt.to(device).long()
        for q in range(self.num_quantizers):
            rounds = steps[min(q, len(steps) - 1)]
            for r in range(rounds):
                masked = codes[:, q] == self.mask_id  # [B, T]
                if not bool(masked.any()):
                    break
                logits = self._guided(semantic, codes, cond, q, cfg_scale)  # [B, T, K]
                if temperature > 0:
                    probs = filter_logits(logits / temperature, top_k=top_k).softmax(-1)
                    picked = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
                    picked = picked.reshape(b, t)
                else:
                    probs = logits.softmax(-1)
                    picked = logits.argmax(-1)
                confidence = probs.gather(-1, picked[..., None])[..., 0].clamp_min(1e-20).log()
                if temperature > 0 and r < rounds - 1:
                    u = torch.rand(b, t, generator=generator).to(device).clamp(1e-20, 1 - 1e-7)
                    confidence = confidence + temperature * (1 - (r + 1) / rounds) * -torch.log(-torch.log(u))
                confidence = confidence.masked_fill(~masked, float("-inf"))
                # frames still masked after this round: the cosine schedule over the masked count
                left = int(math.floor(masked.sum(1).min().item() * math.cos(math.pi / 2 * (r + 1) / rounds)))
                order = confidence.argsort(1, descending=True).argsort(1)  # rank of each frame, 0 = surest
                reveal = masked & (order < (masked.sum(1, keepdim=True) - left))
                codes[:, q] = torch.where(reveal, picked, codes[:, q])
        self.train(was_training)
        return codes


__all__ = ["MaskedAcousticLM"]
