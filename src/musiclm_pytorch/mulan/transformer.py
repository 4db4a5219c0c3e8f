"""The transformer both MuLaN towers share: pre-norm blocks, SDPA attention, rotary positions.

Positions are rotary (Su et al. 2021), 1-D for text and axial 2-D (frequency, time) for spectrogram
patches: half of each head's rotated dims turn with the frequency index, half with the time index.
Memory stays O(N x D), unlike the reference's pairwise position MLP that materialises
(B, N, N, 128) activations, and attention keeps SDPA's fused kernels.

Shape letters: B batch, N tokens, D model dim, H heads, A position axes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class RotaryEmbedding(nn.Module):
    """Axial rotary embedding: ``positions [B, N, A] -> (cos, sin) [B, 1, N, R]``.

    ``R = A * 2 * floor(dim_head / A / 2)`` dims of each head rotate; the rest pass through.
    """

    inv_freq: Tensor

    def __init__(self, dim_head: int, *, num_axes: int = 1, theta: float = 10000.0):
        super().__init__()
        per_axis = (dim_head // num_axes) // 2 * 2
        if per_axis < 2:
            raise ValueError(f"dim_head={dim_head} too small for {num_axes} rotary axes")
        inv_freq = 1.0 / theta ** (torch.arange(0, per_axis, 2, dtype=torch.float32) / per_axis)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.num_axes = num_axes
        self.rot_dim = per_axis * num_axes

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        if positions.shape[-1] != self.num_axes:
            raise ValueError(f"positions last dim must be {self.num_axes}, got shape {tuple(positions.shape)}")
        freqs = positions.float()[..., None] * self.inv_freq  # [B, N, A, R/(2A)]
        freqs = rearrange(freqs, "b n a f -> b n (a f)")
        freqs = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, N, R]
        return freqs.cos(), freqs.sin()


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first ``R`` dims of ``x [B, H, N, Dh]``."""
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    x_rot = x_rot * cos.to(x.dtype) + _rotate_half(x_rot) * sin.to(x.dtype)
    return torch.cat((x_rot, x_pass), dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, *, heads: int, dim_head: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        inner = heads * dim_head
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None, key_mask: Tensor | None) -> Tensor:
        q, k, v = rearrange(self.to_qkv(self.norm(x)), "b n (t h d) -> t b h n d", t=3, h=self.heads)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]  # True = attend
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class FeedForward(nn.Module):
    def __init__(self, dim: int, *, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, dim * mult),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(dim * mult, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Block(nn.Module):
    def __init__(self, dim: int, *, heads: int, dim_head: int, ff_mult: int, attn_dropout: float, ff_dropout: float):
        super().__init__()
        self.attn = Attention(dim, heads=heads, dim_head=dim_head, dropout=attn_dropout)
        self.ff = FeedForward(dim, mult=ff_mult, dropout=ff_dropout)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None, key_mask: Tensor | None) -> Tensor:
        x = x + self.attn(x, rotary, key_mask)
        return x + self.ff(x)


class Transformer(nn.Module):
    """Pre-norm transformer encoder. ``[B, N, D] -> [B, N, D]`` (final LayerNorm applied)."""

    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        heads: int,
        dim_head: int,
        ff_mult: int = 4,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            Block(
                dim, heads=heads, dim_head=dim_head, ff_mult=ff_mult, attn_dropout=attn_dropout, ff_dropout=ff_dropout
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, x: Tensor, *, rotary: tuple[Tensor, Tensor] | None = None, key_mask: Tensor | None = None
    ) -> Tensor:
        for block in self.layers:
            x = block(x, rotary, key_mask)
        return self.norm(x)
