"""The jet backbone: particle embedding + transformer encoder, returning per-particle hidden states.

The backbone computes no loss and knows no target (HF / x-transformers split): a task combines it
with a head. It has no positional input, so a bidirectional backbone is permutation-equivariant over
particles (ordering information, such as the pT rank, belongs in a task's head, never here); with
``causal=True`` it is a GPT over pT-ordered token sequences.

Inputs (``BackboneConfig.input``):

* ``"features"`` - continuous standardised particle features ``x`` (B, N, F);
* ``"tokens"``  - token ids (B, N) from a tokenizer (plus special tokens of the task);
* ``"hybrid"``  - both, embeddings summed (continuous features + token embedding, arXiv 2512.04149).

Optional learnable register tokens are prepended to every jet and stripped from the output; they
give attention a place to park (and the classifier a summary slot) without touching particles.

Shapes: B jets, N particles, F features, D width, R registers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from jetfm.core.checkpoint import load_checkpoint, save_checkpoint
from jetfm.core.config import from_dict
from jetfm.core.errors import ConfigError, InputError
from jetfm.nn.attention import KVCache
from jetfm.nn.transformer import TransformerEncoder

InputKind = Literal["features", "tokens", "hybrid"]


@dataclass
class BackboneConfig:
    """Size and input kind of a :class:`Backbone`.

    ``vocab_size`` counts every id the embedding must accept: codebook plus the task's special
    tokens (for next-token prediction: codebook + start + stop). ``0`` means "not known yet": a
    task that owns a tokenizer fills it in before building the backbone.
    """

    dim: int = 128
    depth: int = 4
    heads: int = 8
    mlp_ratio: float = 4.0
    mlp: Literal["gelu", "swiglu"] = "gelu"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    bias: bool = True  # biases in the encoder's linear layers (False: ~10% faster on the CPU)
    dropout: float = 0.0
    n_registers: int = 0
    causal: bool = False
    input: InputKind = "features"
    n_features: int = 3
    vocab_size: int = 0

    def __post_init__(self) -> None:
        def bad(field: str, expected: str) -> ConfigError:
            return ConfigError(expected, field=field, found=repr(getattr(self, field)))

        for name in ("dim", "depth", "heads"):
            if getattr(self, name) < 1:
                raise bad(name, "an integer >= 1")
        if self.dim % self.heads != 0:
            raise ConfigError(
                f"dim divisible by heads ({self.heads})", field="dim", found=repr(self.dim)
            )
        if self.mlp_ratio <= 0:
            raise bad("mlp_ratio", "a number > 0")
        if self.mlp not in ("gelu", "swiglu"):
            raise bad("mlp", "one of ['gelu', 'swiglu']")
        if self.norm not in ("layernorm", "rmsnorm"):
            raise bad("norm", "one of ['layernorm', 'rmsnorm']")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", "a number in [0, 1)")
        if self.n_registers < 0:
            raise bad("n_registers", "an integer >= 0")
        if self.input not in ("features", "tokens", "hybrid"):
            raise bad("input", "one of ['features', 'tokens', 'hybrid']")
        if self.input in ("features", "hybrid") and self.n_features < 1:
            raise bad("n_features", f"an integer >= 1 for input '{self.input}'")
        if self.vocab_size < 0:
            raise bad("vocab_size", "an integer >= 0 (0: filled in by the task)")


class Backbone(nn.Module):
    """Embedding + :class:`~jetfm.nn.transformer.TransformerEncoder` (+ registers).

    ``forward(x (B, N, F) | None, mask (B, N), tokens (B, N) | None) -> hidden (B, N, D)``.
    Tasks that edit the embedded input (masked particle modelling replaces masked particles by a
    learned vector, next-token prediction adds a class embedding to the start token) call
    :meth:`embed` and :meth:`encode` separately.
    """

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        if c.input in ("tokens", "hybrid") and c.vocab_size < 1:
            raise ConfigError(
                f"an integer >= 1 for input '{c.input}' (codebook + special tokens)",
                field="backbone.vocab_size",
                found=repr(c.vocab_size),
            )
        self.feature_embed: nn.Module | None = None
        self.token_embed: nn.Embedding | None = None
        if c.input in ("features", "hybrid"):
            # a two-layer MLP rather than one linear map: features like log pT and flags mix
            # non-linearly before the first attention layer
            self.feature_embed = nn.Sequential(
                nn.Linear(c.n_features, c.dim), nn.GELU(), nn.Linear(c.dim, c.dim)
            )
        if c.input in ("tokens", "hybrid"):
            self.token_embed = nn.Embedding(c.vocab_size, c.dim)
        # no parameter at all without registers: DDP rejects parameters that never get a gradient
        self.registers = (
            nn.Parameter(torch.randn(c.n_registers, c.dim) * 0.02) if c.n_registers > 0 else None
        )
        self.encoder = TransformerEncoder(
            c.dim,
            c.depth,
            c.heads,
            mlp_ratio=c.mlp_ratio,
            mlp=c.mlp,
            dropout=c.dropout,
            causal=c.causal,
            norm=c.norm,
            bias=c.bias,
        )
        #: set by :meth:`from_pretrained`: the preprocessing dict stored with the weights
        self.preprocessing: dict[str, Any] | None = None

    @property
    def dim(self) -> int:
        return self.config.dim

    def embed(self, x: Tensor | None = None, tokens: Tensor | None = None) -> Tensor:
        """Embed particle features (B, N, F) and/or token ids (B, N) -> (B, N, D)."""
        c = self.config
        h = None
        if self.feature_embed is not None:
            if x is None:
                raise InputError("particle features x (B, N, F)", field="x", found="None")
            if x.ndim != 3 or x.shape[-1] != c.n_features:
                raise InputError(
                    f"features of shape (B, N, {c.n_features})",
                    field="x",
                    found=f"shape {tuple(x.shape)}",
                )
            h = self.feature_embed(x)
        if self.token_embed is not None:
            if tokens is None:
                raise InputError("token ids (B, N)", field="tokens", found="None")
            if tokens.ndim != 2:
                raise InputError(
                    "token ids of shape (B, N)",
                    field="tokens",
                    found=f"shape {tuple(tokens.shape)}",
                )
            t = self.token_embed(tokens.long())
            h = t if h is None else h + t
        assert h is not None  # guaranteed by BackboneConfig validation
        return h

    def encode(self, h: Tensor, mask: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """Run the encoder on embedded particles ``h`` (B, N, D) -> (B, N, D), registers stripped.

        With ``cache`` (causal backbones, incremental decoding) ``h`` holds the new positions only;
        registers are prepended on the first call, when the cache is still empty.
        """
        B, N, _ = h.shape
        if mask is None:
            mask = torch.ones(B, N, dtype=torch.bool, device=h.device)
        if mask.shape != (B, N):
            raise InputError(
                f"a padding mask of shape ({B}, {N})", field="mask", found=tuple(mask.shape)
            )
        mask = mask.to(torch.bool)
        R = self.config.n_registers
        add_registers = R > 0 and (cache is None or cache.length == 0)
        if add_registers:
            assert self.registers is not None
            reg = self.registers.to(h.dtype)[None].expand(B, R, -1)  # (B, R, D)
            h = torch.cat([reg, h], dim=1)
            mask = torch.cat([torch.ones(B, R, dtype=torch.bool, device=mask.device), mask], dim=1)
        out = self.encoder(h, mask, cache=cache)
        return out[:, R:] if add_registers else out

    def forward(
        self, x: Tensor | None, mask: Tensor | None = None, tokens: Tensor | None = None
    ) -> Tensor:
        """Hidden states (B, N, D) of the particles; zero at padded positions."""
        return self.encode(self.embed(x, tokens), mask)

    # ---------------------------------------------------------------- checkpoints
    def save_pretrained(
        self,
        path: str | os.PathLike[str],
        *,
        preprocessing: dict[str, Any] | None = None,
        tokenizer: str | os.PathLike[str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Path:
        """Write a ``backbone`` checkpoint folder (weights, config, preprocessing, tokenizer)."""
        pre = preprocessing if preprocessing is not None else self.preprocessing
        return save_checkpoint(
            path,
            self.state_dict(),
            self.config,
            kind="backbone",
            preprocessing=pre,
            tokenizer=tokenizer,
            meta=meta,
        )

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
    ) -> Backbone:
        """Load a folder written by :meth:`save_pretrained` (checks kind and tokenizer hash)."""
        ckpt = load_checkpoint(path, kind="backbone")
        config = from_dict(BackboneConfig, ckpt.config, file=str(Path(path) / "config.yaml"))
        model = cls(config)
        model.load_state_dict(ckpt.state_dict, strict=True)
        model.preprocessing = ckpt.preprocessing
        return model.to(map_location)
