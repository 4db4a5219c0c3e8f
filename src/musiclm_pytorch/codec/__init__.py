"""Acoustic tokenizers: the ``Codec`` interface, our two codecs (the MDCT transform codec, our default,
and the SoundStream-style time-domain codec), and local EnCodec/DAC."""

from typing import Protocol, runtime_checkable

from torch import Tensor

from .mdct import MDCTCodec
from .pretrained import PretrainedCodec
from .soundstream import SoundStream
from .spectral import SpectralCodec


@runtime_checkable
class Codec(Protocol):
    """What the stage LMs rely on (ARCHITECTURE.md section 3)."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def frame_rate(self) -> float: ...

    @property
    def num_quantizers(self) -> int: ...

    @property
    def codebook_size(self) -> int: ...

    def encode(self, wav: Tensor) -> Tensor: ...

    def decode(self, codes: Tensor) -> Tensor: ...


__all__ = ["Codec", "MDCTCodec", "PretrainedCodec", "SoundStream", "SpectralCodec"]
