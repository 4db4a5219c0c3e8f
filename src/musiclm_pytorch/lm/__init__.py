"""Stage language models: the decoder-only token LM (KV cache, classifier-free guidance) of the paper's
stages, and the parallel frame-aligned masked acoustic stage."""

from .masked import MaskedAcousticLM
from .regression import LatentAcousticLM
from .transformer import KVCache, SamplingConfig, TokenLM, filter_logits, sample

__all__ = ["TokenLM", "MaskedAcousticLM", "LatentAcousticLM", "KVCache", "SamplingConfig", "filter_logits", "sample"]
