"""Multi-head attention over padded particle sets, on top of ``torch``'s fused SDPA kernel.

Why a wrapper at all: jets are padded to the longest jet in the batch, so every attention call needs
the padding mask, and two corner cases must not produce NaN: a padded *query* (its output is thrown
away, but NaN would still leak into gradients through ``0 * NaN``), and a jet with no real particle at
all (every key masked). The boolean masks built here guarantee that every query row can attend at
least one key, so softmax never sees an all ``-inf`` row.

Shapes: B jets, N (query) particles, M key particles, D width, H heads, d = D // H.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def key_padding_allowed(key_mask: Tensor) -> Tensor:
    """Boolean attention mask (B, 1, 1, M) from a key padding mask (B, M), True = may attend.

    Jets with no real particle attend all (padded) keys instead, so their rows stay finite.
    """
    empty = ~key_mask.any(dim=-1, keepdim=True)  # (B, 1)
    return (key_mask | empty)[:, None, None, :]


def causal_allowed(key_mask: Tensor, offset: int = 0) -> Tensor:
    """Boolean mask (B, 1, N, M) for causal attention of N new queries over M keys.

    Query ``i`` sits at absolute position ``offset + i`` and may see keys ``<= offset + i`` that are
    real. A query always sees its own position, so a padded query (or one whose earlier keys are all
    padding) still has one allowed key and stays finite.
    """
    M = key_mask.shape[1]
    pos_q = torch.arange(offset, M, device=key_mask.device)  # (N,)
    pos_k = torch.arange(M, device=key_mask.device)  # (M,)
    tri = pos_k[None, :] <= pos_q[:, None]  # (N, M)
    diag = pos_k[None, :] == pos_q[:, None]  # (N, M)
    allowed = (tri[None] & key_mask[:, None, :]) | diag[None]  # (B, N, M)
    return allowed[:, None]


@dataclass
class KVCache:
    """Keys/values of earlier positions, one entry per layer, for incremental (causal) decoding.

    ``keys[i]``/``values[i]``: (B, H, M, d) for layer ``i``; ``mask``: (B, M) bool, True = real.
    Layers append in :meth:`MultiHeadAttention.forward`; the encoder appends the mask once per step.
    """

    keys: list[Tensor | None] = field(default_factory=list)
    values: list[Tensor | None] = field(default_factory=list)
    mask: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[1])

    def layer(self, i: int) -> tuple[Tensor | None, Tensor | None]:
        while len(self.keys) <= i:
            self.keys.append(None)
            self.values.append(None)
        return self.keys[i], self.values[i]

    def reorder(self, index: Tensor) -> None:
        """Keep/duplicate jets ``index`` (B',) of the batch (for beam search or dropping done jets)."""
        self.keys = [None if k is None else k.index_select(0, index) for k in self.keys]
        self.values = [None if v is None else v.index_select(0, index) for v in self.values]
        if self.mask is not None:
            self.mask = self.mask.index_select(0, index)


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with a padding mask; optional causal masking and KV cache.

    ``forward(x (B, N, D), key_mask (B, M))``; for cross-attention pass ``context`` (B, M, D).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        # one fused projection: self-attention runs a single (D -> 3D) matmul; cross-attention
        # slices it into the query part and the key/value part
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)

    def _split(self, t: Tensor) -> Tensor:
        B, N, _ = t.shape
        return t.view(B, N, self.heads, self.head_dim).transpose(1, 2)  # (B, H, N, d)

    def forward(
        self,
        x: Tensor,
        key_mask: Tensor,
        *,
        context: Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        layer_index: int = 0,
    ) -> Tensor:
        """Attend from ``x`` (B, N, D) to ``context`` (default: ``x``) -> (B, N, D).

        ``key_mask`` (B, M) marks real keys (with a cache: the mask of the cached plus new keys).
        With ``cache``, the new keys/values are appended to layer ``layer_index`` of the cache.
        """
        B, N, D = x.shape
        if context is None:
            q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, N, D) each
        else:
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x, w[:D], None if b is None else b[:D])
            k, v = F.linear(context, w[D:], None if b is None else b[D:]).chunk(2, dim=-1)
        q, k, v = self._split(q), self._split(k), self._split(v)  # (B, H, N or M_new, d)
        offset = 0
        if cache is not None:
            k_old, v_old = cache.layer(layer_index)
            if k_old is not None:
                offset = k_old.shape[2]
                k = torch.cat([k_old, k], dim=2)
                v = torch.cat([v_old, v], dim=2)
            cache.keys[layer_index], cache.values[layer_index] = k, v
        if causal:
            allowed = causal_allowed(key_mask, offset=offset)  # (B, 1, N, M)
        else:
            allowed = key_padding_allowed(key_mask)  # (B, 1, 1, M)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, N, d)
        out = out.transpose(1, 2).reshape(B, N, D)
        return self.out(out)
