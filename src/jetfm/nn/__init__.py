"""Building blocks shared by tokenizers and models: masked attention, transformer blocks."""

from jetfm.nn.attention import KVCache, MultiHeadAttention
from jetfm.nn.transformer import Mlp, TransformerBlock, TransformerEncoder, make_norm

__all__ = [
    "KVCache",
    "Mlp",
    "MultiHeadAttention",
    "TransformerBlock",
    "TransformerEncoder",
    "make_norm",
]
