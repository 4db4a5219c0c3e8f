"""Token layouts of the three MusicLM stages (AudioLM §3.3, MusicLM §3.2).

Each stage flattens its streams into one id sequence over one vocabulary with per-level offsets:

- semantic: ``S_1 .. S_T`` (25 Hz semantic ids), ids ``[0, semantic_vocab)``.
- coarse: ``S_1 .. S_T`` then acoustic frames ``A_1^1 .. A_1^Qc, A_2^1 ..`` (the first Qc codec levels,
  flattened level by level within each frame); level q's code c has id
  ``semantic_vocab + q * codebook_size + c``. The loss covers the acoustic part only.
- fine: coarse frames and fine levels ``A_t^1 .. A_t^(Qc+Qf)`` per frame; level q's code c has id
  ``q * codebook_size + c``. The loss covers the fine levels only (the coarse ones are given).

``allowed(...)`` gives the ids each generated position may take, so a sampled coarse level-2 token is
always a level-2 code.

Shape letters: B batch, T frames, Q levels, N tokens, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor


def _check_ids(name: str, x: Tensor, high: int) -> None:
    if x.dtype not in (torch.long, torch.int32, torch.int16):
        raise ValueError(f"{name} must be integer ids, got dtype {x.dtype}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= high):
        raise ValueError(f"{name} must be in [0, {high}), got [{int(x.min())}, {int(x.max())}]")


@dataclass(frozen=True)
class SemanticLayout:
    semantic_vocab: int

    @property
    def vocab_size(self) -> int:
        return self.semantic_vocab

    @property
    def groups(self) -> list[int]:
        """Sizes of the id ranges of the vocabulary (``TokenLM(token_groups=...)``)."""
        return [self.semantic_vocab]

    def flatten(self, semantic: Tensor) -> tuple[Tensor, Tensor]:
        """``semantic [B, T] -> (tokens [B, T], loss_mask [B, T])``."""
        _check_ids("semantic ids", semantic, self.semantic_vocab)
        return semantic.long(), torch.ones_like(semantic, dtype=torch.bool)

    def allowed(self, steps: int) -> Tensor:
        return torch.ones(steps, self.vocab_size, dtype=torch.bool)


@dataclass(frozen=True)
class CoarseLayout:
    semantic_vocab: int
    codebook_size: int
    num_coarse: int

    @property
    def vocab_size(self) -> int:
        return self.semantic_vocab + self.num_coarse * self.codebook_size

    def offsets(self) -> Tensor:
        return self.semantic_vocab + torch.arange(self.num_coarse) * self.codebook_size

    @property
    def groups(self) -> list[int]:
        """Semantic ids, then each coarse level."""
        return [self.semantic_vocab] + [self.codebook_size] * self.num_coarse

    def flatten(self, semantic: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
        """``semantic [B, Ts]``, ``codes [B, Qc, Ta] -> (tokens [B, Ts + Qc*Ta], loss_mask)``."""
        if codes.ndim != 3 or codes.shape[1] != self.num_coarse:
            raise ValueError(f"coarse codes must be [B, {self.num_coarse}, T], got shape {tuple(codes.shape)}")
        _check_ids("semantic ids", semantic, self.semantic_vocab)
        _check_ids("coarse codes", codes, self.codebook_size)
        acoustic = rearrange(codes.long() + self.offsets()[None, :, None].to(codes.device), "b q t -> b (t q)")
        tokens = torch.cat([semantic.long(), acoustic], dim=1)
        mask = torch.cat([torch.zeros_like(semantic, dtype=torch.bool), torch.ones_like(acoustic, dtype=torch.bool)], 1)
        return tokens, mask

    def unflatten(self, acoustic: Tensor) -> Tensor:
        """Acoustic tokens ``[B, Qc * T]`` (offsets included) -> codes ``[B, Qc, T]``."""
        if acoustic.shape[1] % self.num_coarse:
            raise ValueError(
                f"{acoustic.shape[1]} acoustic tokens is not a whole number of {self.num_coarse}-level frames"
            )
        codes = rearrange(acoustic, "b (t q) -> b q t", q=self.num_coarse) - self.offsets()[None, :, None].to(
            acoustic.device
        )
        _check_ids("decoded coarse codes", codes, self.codebook_size)
        return codes

    def allowed(self, frames: int) -> Tensor:
        """``[frames * Qc, V]``: position ``t*Qc + q`` may only hold level-q codes."""
        mask = torch.zeros(frames * self.num_coarse, self.vocab_size, dtype=torch.bool)
        for i in range(frames * self.num_coarse):
            lo = int(self.offsets()[i % self.num_coarse])
            mask[i, lo : lo + self.codebook_size] = True
        return mask


@dataclass(frozen=True)
class FineLayout:
    codebook_size: int
    num_coarse: int
    num_fine: int

    @property
    def levels(self) -> int:
        return self.num_coarse + self.num_fine

    @property
    def vocab_size(self) -> int:
        return self.levels * self.codebook_size

    def offsets(self) -> Tensor:
        return torch.arange(self.levels) * self.codebook_size

    @property
    def groups(self) -> list[int]:
        """One range per codec level."""
        return [self.codebook_size] * self.levels

    def flatten(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """``codes [B, Qc + Qf, T] -> (tokens [B, (Qc + Qf) * T], loss_mask on the fine levels)``."""
        if codes.ndim != 3 or codes.shape[1] != self.levels:
            raise ValueError(f"codes must be [B, {self.levels}, T], got shape {tuple(codes.shape)}")
        _check_ids("codes", codes, self.codebook_size)
        tokens = rearrange(codes.long() + self.offsets()[None, :, None].to(codes.device), "b q t -> b (t q)")
        is_fine = (torch.arange(self.levels) >= self.num_coarse).repeat(codes.shape[2])
        return tokens, is_fine[None].expand(codes.shape[0], -1).to(codes.device)

    def unflatten(self, tokens: Tensor) -> Tensor:
        codes = rearrange(tokens, "b (t q) -> b q t", q=self.levels) - self.offsets()[None, :, None].to(tokens.device)
        _check_ids("decoded codes", codes, self.codebook_size)
        return codes


def check_codec_contract(layout: CoarseLayout | FineLayout, *, codebook_size: int, num_quantizers: int) -> None:
    """The stage and the codec must agree on codebook size and on having enough levels."""
    if layout.codebook_size != codebook_size:
        raise ValueError(f"stage codebook_size={layout.codebook_size} but the codec's codebook_size={codebook_size}")
    needed = layout.num_coarse if isinstance(layout, CoarseLayout) else layout.levels
    if needed > num_quantizers:
        raise ValueError(f"stage needs {needed} codec levels but the codec has num_quantizers={num_quantizers}")
