"""What every codec class shares: the ``Codec`` interface's rates and sizes, the bitrate, and the
checks of waveforms and codes (one error message for each mistake, whichever codec it is); and, for
our own codecs (an encoder, a residual VQ ``self.rvq``, a decoder), ``encode`` / ``decode`` /
``forward`` written once (:class:`RVQCodec`)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


class CodecBase:
    """Mixin: a subclass sets ``_sample_rate``, ``hop``, ``_num_quantizers`` and ``_codebook_size``."""

    _sample_rate: int
    hop: int
    _num_quantizers: int
    _codebook_size: int

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def frame_rate(self) -> float:
        return self._sample_rate / self.hop

    @property
    def num_quantizers(self) -> int:
        return self._num_quantizers

    @property
    def codebook_size(self) -> int:
        return self._codebook_size

    def bitrate(self, num_quantizers: int | None = None) -> float:
        """Bits per second with the first ``num_quantizers`` levels."""
        return self.frame_rate * (num_quantizers or self.num_quantizers) * math.log2(self.codebook_size)

    def _prepare(self, wav: Tensor) -> Tensor:
        """``[B, 1, S]`` (or ``[B, S]``) float, right-padded with zeros to a multiple of the hop."""
        if wav.ndim == 2:
            wav = wav[:, None]
        if wav.ndim != 3 or wav.shape[1] != 1:
            raise ValueError(f"wav must be [B, 1, S] (or [B, S]), got shape {tuple(wav.shape)}")
        if not torch.is_floating_point(wav):
            raise ValueError(f"wav must be floating point, got dtype {wav.dtype}")
        pad = (-wav.shape[-1]) % self.hop
        return F.pad(wav, (0, pad)) if pad else wav

    def _check_codes(self, codes: Tensor) -> Tensor:
        """``codes [B, Q' <= num_quantizers, T]`` integer ids inside the codebook, as int64."""
        if codes.ndim != 3 or not 1 <= codes.shape[1] <= self.num_quantizers:
            raise ValueError(f"codes must be [B, Q <= {self.num_quantizers}, T], got shape {tuple(codes.shape)}")
        if codes.dtype not in (torch.long, torch.int32, torch.int16):
            raise ValueError(f"codes must be integer ids, got dtype {codes.dtype}")
        if int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size:
            raise ValueError(
                f"codes must be in [0, {self.codebook_size}), got [{int(codes.min())}, {int(codes.max())}]"
            )
        return codes.long()


def residual_vq(
    *, dim: int, num_quantizers: int, codebook_size: int, ema_decay: float, kmeans_init: bool,
    dead_code_threshold: float, quantizer_dropout: bool, commitment_weight: float,
) -> Any:  # fmt: skip
    """Our codecs' residual VQ (vector-quantize-pytorch): EMA codebooks, k-means init on the first batch
    (unless fitted before), dead-code replacement, quantizer dropout (any prefix of levels decodes)."""
    from vector_quantize_pytorch import ResidualVQ

    return ResidualVQ(
        dim=dim, num_quantizers=num_quantizers, codebook_size=codebook_size, decay=ema_decay,
        kmeans_init=kmeans_init, kmeans_iters=10, threshold_ema_dead_code=dead_code_threshold,
        quantize_dropout=quantizer_dropout, commitment_weight=commitment_weight,
    )  # fmt: skip


class RVQCodec(CodecBase):
    """Mixin for an ``nn.Module`` codec with ``self.rvq`` (vector-quantize-pytorch ``ResidualVQ``), whose
    subclass defines ``_latents(wav) -> [B, T, D]`` and ``_synthesize(latents [B, T, D]) -> [B, 1, S]``."""

    rvq: Any
    training: bool

    def _latents(self, wav: Tensor) -> Tensor:
        raise NotImplementedError

    def _synthesize(self, latents: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, wav: Tensor, *, num_quantizers: int | None = None) -> Tensor:
        """``wav [B, 1, S] -> codes [B, Q, T]`` (``T = ceil(S / hop)``)."""
        was_training = self.training
        self.eval()  # type: ignore[attr-defined]
        _, indices, _ = self.rvq(self._latents(wav))
        self.train(was_training)  # type: ignore[attr-defined]
        codes = indices.transpose(1, 2)
        return codes[:, :num_quantizers] if num_quantizers else codes

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """``codes [B, Q', T] -> wav [B, 1, T * hop]``; ``Q' <= num_quantizers`` uses the first levels."""
        indices = self._check_codes(codes).transpose(1, 2)
        if indices.shape[-1] < self.num_quantizers:  # -1 marks dropped levels: they contribute nothing
            indices = F.pad(indices, (0, self.num_quantizers - indices.shape[-1]), value=-1)
        return self._synthesize(self.rvq.get_output_from_indices(indices))

    def forward(self, wav: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(reconstruction [B, 1, S_padded], codes [B, Q, T], commitment loss)``; quantizer dropout
        applies in training."""
        quantized, indices, commit = self.rvq(self._latents(wav))
        return self._synthesize(quantized), indices.transpose(1, 2), commit.sum()
