"""xling: controlled experiments on cross-lingual generalisation in language models."""

__version__ = "0.2.0"
