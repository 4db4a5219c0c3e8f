"""Offline evaluation: the independent judge (tempo, key, drums, instrument family)."""
