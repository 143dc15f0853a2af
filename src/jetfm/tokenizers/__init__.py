"""Particle tokenizers: standardised particle features <-> integer tokens.

Types: per-particle VQ-VAE (MPM v1), jet-conditional VQ-VAE (OmniJet-alpha), FSQ, and a k-means
baseline. All share :class:`~jetfm.tokenizers.base.Tokenizer`'s ``encode``/``decode``/
``save_pretrained``/``from_pretrained``; :func:`build_tokenizer` makes one from its config.
"""

from __future__ import annotations

from typing import Any

from jetfm.tokenizers.base import PAD_ID, Tokenizer, TokenizerOutput
from jetfm.tokenizers.config import QuantizerConfig, TokenizerConfig, TokenizerTrainConfig
from jetfm.tokenizers.kmeans import KMeansTokenizer
from jetfm.tokenizers.vqvae import VQVAETokenizer

__all__ = [
    "PAD_ID",
    "KMeansTokenizer",
    "QuantizerConfig",
    "Tokenizer",
    "TokenizerConfig",
    "TokenizerOutput",
    "TokenizerTrainConfig",
    "VQVAETokenizer",
    "build_tokenizer",
    "load_tokenizer",
]


def build_tokenizer(
    config: TokenizerConfig, preprocessing: dict[str, Any] | None = None
) -> Tokenizer:
    """A fresh (untrained) tokenizer of ``config.type``."""
    if config.type == "kmeans":
        return KMeansTokenizer(config, preprocessing)
    return VQVAETokenizer(config, preprocessing)


def load_tokenizer(path: Any, map_location: Any = "cpu") -> Tokenizer:
    """Load any tokenizer checkpoint folder (same as ``Tokenizer.from_pretrained``)."""
    return Tokenizer.from_pretrained(path, map_location=map_location)
