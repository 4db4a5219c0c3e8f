"""Semantic tokenizer: k-means ids over timbre-poor musical features at 25 Hz."""

from .tokenizer import MusicalFeatureExtractor, SemanticTokenizer

__all__ = ["MusicalFeatureExtractor", "SemanticTokenizer"]
