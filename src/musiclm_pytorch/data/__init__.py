"""Data: the tag schema, the synthetic captioned corpus, training datasets and the judge."""

from .tags import SCHEMA_VERSION, tempo_class, validate_tags

__all__ = ["SCHEMA_VERSION", "tempo_class", "validate_tags"]
