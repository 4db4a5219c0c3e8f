"""What the frame-aligned acoustic stages share (:mod:`.masked`, :mod:`.regression`): the semantic id
embedding, the continuous conditioning (a zero-initialised projection of the MuLaN embedding, a learned
null vector for guidance, Gaussian noise in training), a bidirectional transformer (RoPE, SDPA), and
the retrieval prior that bridges text to audio conditioning.

The prior (benchmarks/RESULTS.md, "The acoustic oracle on the latent stage"): a stage trained on MuLaN
*audio* latents did worse than with no conditioning when given a caption's *text* latent, and as
well as with the clip's own audio latent when given the mean audio latent of the ``prior_k`` training
clips nearest the text (unCLIP's prior, without training one). The stage keeps those training audio
latents (``prior_bank``, ``prior_size`` rows) so that generation from text can use them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import Component
from ..mulan.transformer import RotaryEmbedding
from .prior import knn_mean
from .transformer import _Block


def noisy_condition(cond: Tensor, noise: float, generator: torch.Generator | None = None) -> Tensor:
    """Unit conditioning latents ``[B, C]`` plus Gaussian noise of a per-row std drawn in ``[0, noise]`` (per
    dimension), re-normalised: how every stage trains on audio latents so that it takes the latents
    derived from text at generation. ``noise <= 0``: ``cond`` as it is."""
    if noise <= 0:
        return cond
    scale = torch.rand(cond.shape[0], 1, generator=generator).to(cond) * noise
    return F.normalize(cond + scale * torch.randn(cond.shape, generator=generator).to(cond), dim=-1)


class FrameAlignedStage(Component):
    """Base of the frame-aligned stages; a subclass calls :meth:`_init_trunk` in its constructor."""

    semantic_vocab: int
    ratio: int
    cond_dim: int
    cond_drop_prob: float
    cond_noise: float

    prior_bank: Tensor

    def _init_trunk(
        self, *, semantic_vocab: int, ratio: int, cond_dim: int, dim: int, depth: int, heads: int, dim_head: int,
        ff_hidden: int, dropout: float, cond_drop_prob: float, cond_noise: float, prior_size: int = 0,
        prior_k: int = 8,
    ) -> None:  # fmt: skip
        if not 0.0 <= cond_drop_prob < 1.0 or cond_noise < 0 or ratio < 1:
            raise ValueError(f"need 0 <= cond_drop_prob < 1, cond_noise >= 0, ratio >= 1; got {cond_drop_prob}, "
                             f"{cond_noise}, {ratio}")  # fmt: skip
        self.semantic_vocab, self.ratio, self.cond_dim = semantic_vocab, ratio, cond_dim
        self.cond_drop_prob, self.cond_noise = cond_drop_prob, cond_noise
        self.semantic_emb = nn.Embedding(semantic_vocab, dim)
        self.cond_proj = nn.Linear(cond_dim, dim)  # zero-initialised: the conditioning path starts as a no-op
        nn.init.zeros_(self.cond_proj.weight)
        nn.init.zeros_(self.cond_proj.bias)
        self.null_cond = nn.Parameter(torch.zeros(dim))
        self.rotary = RotaryEmbedding(dim_head, num_axes=1)
        self.blocks = nn.ModuleList(
            _Block(dim, heads, dim_head, ff_hidden, dropout, causal=False) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        if prior_size < 0 or prior_k < 1:
            raise ValueError(f"need prior_size >= 0 and prior_k >= 1, got {prior_size}, {prior_k}")
        self.prior_k = prior_k
        # an empty bank is not saved: checkpoints from before the prior (config without prior_size) still load
        self.register_buffer("prior_bank", torch.zeros(prior_size, cond_dim), persistent=prior_size > 0)

    def set_prior_bank(self, latents: Tensor) -> None:
        """Keep ``latents [prior_size, C]`` (training clips' audio latents) for :meth:`text_prior`."""
        if latents.shape != self.prior_bank.shape:
            raise ValueError(f"prior bank must be {tuple(self.prior_bank.shape)} (prior_size x cond_dim), got "
                             f"{tuple(latents.shape)}")  # fmt: skip
        self.prior_bank.copy_(F.normalize(latents.float(), dim=-1))

    def text_prior(self, text_latents: Tensor) -> Tensor:
        """The conditioning for ``text_latents [B, C]``: the normalised mean of the ``prior_k`` bank rows
        nearest each (cosine), or the text latents themselves when the stage keeps no bank."""
        if len(self.prior_bank) == 0:
            return text_latents
        return knn_mean(text_latents, self.prior_bank.to(text_latents), self.prior_k)

    def _check_semantic(self, semantic: Tensor) -> None:
        if semantic.numel() and (int(semantic.min()) < 0 or int(semantic.max()) >= self.semantic_vocab):
            raise ValueError(f"semantic ids must be in [0, {self.semantic_vocab}), got "
                             f"[{int(semantic.min())}, {int(semantic.max())}]")  # fmt: skip

    def condition(self, cond: Tensor | None, batch: int, *, drop: Tensor | None = None) -> Tensor:
        """``[B, D]``: the projected conditioning, or the null vector for ``cond=None`` / dropped rows."""
        null = self.null_cond.expand(batch, -1)
        if cond is None:
            return null
        c = self.cond_proj(cond.to(self.null_cond.dtype))
        return c if drop is None else torch.where(drop[:, None], null, c)

    def noisy(self, cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``cond`` plus Gaussian noise of a per-row std in ``[0, cond_noise]``, re-normalised."""
        return noisy_condition(cond, self.cond_noise, generator)

    def _transform(self, x: Tensor) -> Tensor:
        """The bidirectional transformer over frames: ``[B, T, D] -> [B, T, D]`` (normalised)."""
        rotary = self.rotary(torch.arange(x.shape[1], device=x.device)[None, :, None])
        for layer, block in enumerate(self.blocks):
            x = block(x, rotary, None, layer)
        return self.norm(x)
