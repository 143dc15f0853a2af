"""Pre-norm transformer blocks and encoder, shared by tokenizers and backbones.

The encoder has no positional input: without ``causal`` it is permutation-equivariant over
particles, which is what a set of particles calls for. With ``causal=True`` position ``i`` sees only
positions ``<= i`` (a GPT over pT-ordered token sequences), and a :class:`~jetfm.nn.attention.KVCache`
lets a sampler feed one new position at a time.

Outputs at padded positions are set to zero, so a pooling layer that forgets the mask still does not
pick up garbage, and padding a batch further changes nothing for the real particles.

Shapes: B jets, N particles, D width.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jetfm.nn.attention import KVCache, MultiHeadAttention

MlpKind = Literal["gelu", "swiglu"]
NormKind = Literal["layernorm", "rmsnorm"]


def make_norm(kind: str, dim: int) -> nn.Module:
    """LayerNorm or RMSNorm of width ``dim``."""
    if kind == "layernorm":
        return nn.LayerNorm(dim)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim)
    raise ValueError(f"norm must be 'layernorm' or 'rmsnorm', got {kind!r}")


class Mlp(nn.Module):
    """Feed-forward layer: GELU MLP, or SwiGLU with 2/3 of the hidden width (same parameter count).

    ``bias=False`` drops the linear layers' biases (as LLaMA/PaLM do): on the CPU, adding a bias
    means copying it into every output row before the matmul, ~8% of a small model's training step.
    """

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        kind: str = "gelu",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.kind = kind
        if kind == "gelu":
            self.fc1 = nn.Linear(dim, hidden, bias=bias)
        elif kind == "swiglu":
            hidden = max(1, int(2 * hidden / 3))
            self.fc1 = nn.Linear(dim, 2 * hidden, bias=bias)
        else:
            raise ValueError(f"mlp must be 'gelu' or 'swiglu', got {kind!r}")
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        if self.kind == "gelu":
            h = F.gelu(h)
        else:
            a, b = h.chunk(2, dim=-1)
            h = F.silu(a) * b
        return self.fc2(self.drop(h))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``.

    Pre-norm keeps the residual stream un-normalised, which trains stably without warm-up tricks
    at the small depths used here. ``bias`` applies to every linear layer of the block.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        mlp: str = "gelu",
        dropout: float = 0.0,
        norm: str = "layernorm",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, dim)
        self.attn = MultiHeadAttention(dim, heads, dropout=dropout, bias=bias)
        self.norm2 = make_norm(norm, dim)
        self.mlp = Mlp(dim, mlp_ratio, mlp, dropout, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        key_mask: Tensor,
        *,
        causal: bool = False,
        cache: KVCache | None = None,
        layer_index: int = 0,
    ) -> Tensor:
        """x (B, N, D), key_mask (B, M) (M = N, or cached + N) -> (B, N, D)."""
        h = self.attn(self.norm1(x), key_mask, causal=causal, cache=cache, layer_index=layer_index)
        x = x + self.drop(h)
        return x + self.drop(self.mlp(self.norm2(x)))


class TransformerEncoder(nn.Module):
    """A stack of :class:`TransformerBlock` with a final norm; masked, optionally causal.

    ``forward(x (B, N, D), mask (B, N) bool True = real) -> (B, N, D)``; padded outputs are zero.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        mlp: str = "gelu",
        dropout: float = 0.0,
        causal: bool = False,
        norm: str = "layernorm",
        bias: bool = True,
    ) -> None:
        super().__init__()
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self.dim = dim
        self.causal = causal
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, mlp_ratio, mlp, dropout, norm, bias) for _ in range(depth)
        )
        self.norm = make_norm(norm, dim)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        """Encode ``x`` (B, N, D) with padding ``mask`` (B, N) (None = all real) -> (B, N, D).

        With ``cache`` (causal encoders only) ``x`` holds the N *new* positions, which attend to
        every cached position and causally among themselves; the cache is extended in place.
        """
        B, N, _ = x.shape
        if mask is None:
            mask = torch.ones(B, N, dtype=torch.bool, device=x.device)
        mask = mask.to(torch.bool)
        key_mask = mask
        if cache is not None:
            if not self.causal:
                raise ValueError("a KV cache needs a causal encoder")
            key_mask = cache.extend_mask(mask)  # (B, M_old + N)
        for i, block in enumerate(self.blocks):
            x = block(x, key_mask, causal=self.causal, cache=cache, layer_index=i)
        if cache is not None:
            cache.commit(N)
        x = self.norm(x)
        return x.masked_fill(~mask[..., None], 0.0)
