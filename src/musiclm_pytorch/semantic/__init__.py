"""Semantic tokenizer: k-means ids over timbre-poor musical features at 25 Hz."""

from .tokenizer import HFFeatureExtractor, MusicalFeatureExtractor, SemanticTokenizer

__all__ = ["HFFeatureExtractor", "MusicalFeatureExtractor", "SemanticTokenizer"]
