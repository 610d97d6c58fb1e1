"""Evaluation: a benchmark registry and the runner behind ``longrl eval``."""
