"""A SoundStream-style neural codec (Zeghidour et al. 2021): causal SEANet encoder/decoder + residual VQ.

- Encoder: a 7-tap conv, then per stride ``s`` three residual units (dilations 1, 3, 9) and a strided
  conv (kernel 2s) that doubles the channels; a final conv to ``dim``. All convolutions are causal
  (left padding only), so the codec can stream.
- Residual VQ: vector-quantize-pytorch's ``ResidualVQ`` with k-means initialisation, EMA codebooks,
  dead-code replacement and quantizer dropout (bitrate scalability: in training a random number of
  levels is used, so any prefix of the levels decodes).
- Decoder: the mirror image with causal transposed convolutions.

Hop = product of strides: 16 kHz with strides (2, 4, 5, 8) gives 320 samples, 50 Hz frames; the
paper preset is 24 kHz with (2, 4, 5, 6) -> 240... MusicLM uses 24 kHz / 480 = 50 Hz: (3, 4, 5, 8).

Length rule: ``encode`` right-pads the waveform with zeros to a multiple of the hop (documented, not
silent); ``decode`` returns ``T * hop`` samples.

Shape letters: B batch, S samples, T frames, Q quantizers, D latent dim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import Component
from .base import RVQCodec, residual_vq


class CausalConv1d(nn.Conv1d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.causal_pad = (self.kernel_size[0] - 1) * self.dilation[0] + 1 - self.stride[0]

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.causal_pad, 0)))


class CausalConvTranspose1d(nn.ConvTranspose1d):
    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        out = super().forward(x)
        trim = self.kernel_size[0] - self.stride[0]
        return out[..., : out.shape[-1] - trim] if trim > 0 else out


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ELU(),
            CausalConv1d(channels, channels, 7, dilation=dilation),
            nn.ELU(),
            CausalConv1d(channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


def _encoder(channels: int, strides: Sequence[int], dim: int) -> nn.Sequential:
    layers: list[nn.Module] = [CausalConv1d(1, channels, 7)]
    ch = channels
    for s in strides:
        layers += [ResidualUnit(ch, d) for d in (1, 3, 9)]
        layers += [nn.ELU(), CausalConv1d(ch, 2 * ch, 2 * s, stride=s)]
        ch *= 2
    layers += [nn.ELU(), CausalConv1d(ch, dim, 3)]
    return nn.Sequential(*layers)


def _decoder(channels: int, strides: Sequence[int], dim: int) -> nn.Sequential:
    ch = channels * 2 ** len(strides)
    layers: list[nn.Module] = [CausalConv1d(dim, ch, 7)]
    for s in reversed(strides):
        layers += [nn.ELU(), CausalConvTranspose1d(ch, ch // 2, 2 * s, stride=s)]
        ch //= 2
        layers += [ResidualUnit(ch, d) for d in (1, 3, 9)]
    layers += [nn.ELU(), CausalConv1d(ch, 1, 7)]
    return nn.Sequential(*layers)


class SoundStream(RVQCodec, Component):
    """Neural audio codec with the ``Codec`` interface (see :mod:`musiclm_pytorch.codec`).

    Args:
        sample_rate: audio rate.
        strides: encoder downsampling factors; hop = their product.
        channels: first encoder width (doubles at each stride).
        dim: latent (codebook vector) size.
        num_quantizers, codebook_size: residual VQ (paper: 12 x 1024).
        quantizer_dropout: train with a random number of levels (bitrate scalability).
        ema_decay, kmeans_init, dead_code_threshold: codebook learning (EMA, k-means init on the
            first batch, replace codes used less than this often per batch by the EMA).
        commitment_weight: weight of the commitment loss returned by ``forward``.
    """

    component_name = "soundstream"

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        strides: Sequence[int] = (2, 4, 5, 8),
        channels: int = 32,
        dim: int = 256,
        num_quantizers: int = 8,
        codebook_size: int = 1024,
        quantizer_dropout: bool = True,
        ema_decay: float = 0.99,
        kmeans_init: bool = True,
        dead_code_threshold: float = 2.0,
        commitment_weight: float = 1.0,
    ):
        super().__init__()
        self.save_config(
            sample_rate=sample_rate, strides=list(strides), channels=channels, dim=dim, num_quantizers=num_quantizers,
            codebook_size=codebook_size, quantizer_dropout=quantizer_dropout, ema_decay=ema_decay,
            kmeans_init=kmeans_init, dead_code_threshold=dead_code_threshold, commitment_weight=commitment_weight,
        )  # fmt: skip
        if not strides or any(s < 1 for s in strides):
            raise ValueError(f"strides must be positive integers, got {list(strides)}")
        self._sample_rate = sample_rate
        self.hop = math.prod(strides)
        self._num_quantizers, self._codebook_size = num_quantizers, codebook_size
        self.encoder = _encoder(channels, strides, dim)
        self.decoder = _decoder(channels, strides, dim)
        self.rvq = residual_vq(
            dim=dim, num_quantizers=num_quantizers, codebook_size=codebook_size, ema_decay=ema_decay,
            kmeans_init=kmeans_init, dead_code_threshold=dead_code_threshold, quantizer_dropout=quantizer_dropout,
            commitment_weight=commitment_weight,
        )  # fmt: skip

    def _latents(self, wav: Tensor) -> Tensor:
        return self.encoder(self._prepare(wav)).transpose(1, 2)  # [B, T, D]

    def _synthesize(self, latents: Tensor) -> Tensor:
        return self.decoder(latents.transpose(1, 2))  # [B, 1, T * hop]
