"""Stage language models: the decoder-only token LM (KV cache, classifier-free guidance) of the paper's
stages, the frame-aligned acoustic stages, and the retrieval prior that bridges text to them."""

from .flow import FlowAcousticLM
from .masked import MaskedAcousticLM
from .prior import RetrievalPrior
from .regression import LatentAcousticLM
from .transformer import KVCache, SamplingConfig, TokenLM, filter_logits, sample

__all__ = [
    "TokenLM", "MaskedAcousticLM", "LatentAcousticLM", "FlowAcousticLM", "RetrievalPrior", "KVCache", "SamplingConfig",
    "filter_logits", "sample",
]  # fmt: skip
