"""Stage language models: one decoder-only transformer with a KV cache and classifier-free guidance."""

from .transformer import KVCache, SamplingConfig, TokenLM, filter_logits, sample

__all__ = ["TokenLM", "KVCache", "SamplingConfig", "filter_logits", "sample"]
