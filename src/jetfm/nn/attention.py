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
from typing import ClassVar

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

    Buffers are preallocated and every step writes the new keys/values in place: appending with
    ``torch.cat`` copied the whole prefix at every step and layer, which dominated cached sampling
    on the CPU. They grow in blocks of ``GROW`` positions, and a one-position step attends over the
    whole buffer (:meth:`padded`; unfilled positions are masked out) rather than over its filled
    prefix: a slice ``[:, :, :length]`` of a larger buffer is a strided batch, and the CPU's batched
    matrix product runs 2-3x slower on it than on the contiguous buffer (BENCHMARKS.md, "Generation
    with a KV cache"). Block growth keeps the wasted positions below ``GROW`` and the copies at
    each growth to a few percent of the attention's own reads.

    A step is: :meth:`extend_mask` (the mask of cached + new positions), :meth:`append` once per
    layer (the layer's keys/values of cached + new positions), then :meth:`commit`.
    ``keys[i]``/``values[i]``: buffers (B, H, capacity, d) of layer ``i``; only ``[:length]`` is valid.
    """

    GROW: ClassVar[int] = 16

    keys: list[Tensor | None] = field(default_factory=list)
    values: list[Tensor | None] = field(default_factory=list)
    mask_buffer: Tensor | None = None  # (B, capacity) bool
    length: int = 0  # committed positions

    @property
    def mask(self) -> Tensor | None:
        """(B, length) bool, True = real cached position."""
        return None if self.mask_buffer is None else self.mask_buffer[:, : self.length]

    @staticmethod
    def _fit(buf: Tensor | None, like: Tensor, needed: int, dim: int) -> Tensor:
        """``buf`` if it holds ``needed`` positions along ``dim``, else a copy in a buffer of
        ``needed`` rounded up to a multiple of ``GROW`` (zeros / False past the old contents)."""
        if buf is not None and buf.shape[dim] >= needed:
            return buf
        old = 0 if buf is None else buf.shape[dim]
        shape = list(like.shape)
        shape[dim] = -(-needed // KVCache.GROW) * KVCache.GROW
        new = like.new_empty(shape)  # (the head is copied over, only the tail needs zeros)
        if buf is not None:
            new.narrow(dim, 0, old).copy_(buf)
        # zeros, not garbage: unwritten values get weight 0 in :meth:`padded`, and 0 * NaN = NaN
        new.narrow(dim, old, shape[dim] - old).zero_()
        return new

    def extend_mask(self, mask: Tensor) -> Tensor:
        """Write the new positions' mask (B, N) after the cached ones; return (B, length + N)."""
        n = self.length + mask.shape[1]
        self.mask_buffer = self._fit(self.mask_buffer, mask, n, 1)
        self.mask_buffer[:, self.length : n] = mask
        return self.mask_buffer[:, :n]

    def append(self, i: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store layer ``i``'s new keys/values (B, H, N, d); return those of all positions so far."""
        while len(self.keys) <= i:
            self.keys.append(None)
            self.values.append(None)
        n = self.length + k.shape[2]
        kb = self.keys[i] = self._fit(self.keys[i], k, n, 2)
        vb = self.values[i] = self._fit(self.values[i], v, n, 2)
        kb[:, :, self.length : n] = k
        vb[:, :, self.length : n] = v
        return kb[:, :, :n], vb[:, :, :n]

    def padded(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        """Layer ``i``'s whole buffers, keys and values (B, H, C, d), and the mask (B, C) of the
        positions written so far (this step's included), False past them; C = the capacity.

        For a step's attention: scores over the unfilled positions are masked to exactly zero
        weight, and the contiguous buffers multiply faster than their filled prefix would.
        """
        kb, vb = self.keys[i], self.values[i]
        if kb is None or vb is None or self.mask_buffer is None:
            raise ValueError(f"layer {i} of the KV cache holds nothing yet")
        return kb, vb, self.mask_buffer[:, : kb.shape[2]]

    def commit(self, n_new: int) -> None:
        """The step's positions are now part of the cache."""
        self.length += n_new

    def reorder(self, index: Tensor) -> None:
        """Keep/duplicate jets ``index`` (B',) of the batch (for beam search or dropping done jets)."""
        self.keys = [None if k is None else k.index_select(0, index) for k in self.keys]
        self.values = [None if v is None else v.index_select(0, index) for v in self.values]
        if self.mask_buffer is not None:
            self.mask_buffer = self.mask_buffer.index_select(0, index)


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
            offset = cache.length
            k, v = cache.append(layer_index, k, v)  # (B, H, offset + N, d)
        if cache is not None and N == 1:
            # one new position per step (incremental decoding): it may see every real cached key and
            # itself, so causality is just the padding mask; plain matmuls beat the SDPA kernel's
            # per-call overhead at this size. Over the whole contiguous buffer (C >= M positions,
            # the unwritten ones masked): see KVCache
            k, v, key_mask = cache.padded(layer_index)  # (B, H, C, d), (B, H, C, d), (B, C)
            scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)  # (B, H, 1, C)
            scores = scores.masked_fill(~key_padding_allowed(key_mask), float("-inf"))
            out = scores.softmax(dim=-1) @ v  # (B, H, 1, d): unwritten positions weigh 0
            return self.out(out.transpose(1, 2).reshape(B, N, D))
        if causal:
            allowed = causal_allowed(key_mask, offset=offset)  # (B, 1, N, M)
        else:
            allowed = key_padding_allowed(key_mask)  # (B, 1, 1, M)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, N, d)
        out = out.transpose(1, 2).reshape(B, N, D)
        return self.out(out)
