"""Typed configuration of a particle tokenizer: architecture, quantiser and training recipe.

One :class:`TokenizerConfig` describes everything needed to rebuild a tokenizer from its checkpoint
(it is saved as the checkpoint's ``config.yaml``) and to train it again with the same recipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from jetfm.core.errors import ConfigError

TokenizerType = Literal["vqvae_particle", "vqvae_conditional", "fsq", "kmeans"]


@dataclass
class QuantizerConfig:
    """The VQ layer and its collapse guards (see :mod:`jetfm.nn.quantizers`)."""

    kind: Literal["vq", "fsq"] = "vq"
    ema: bool = True  # EMA codebook updates instead of a codebook loss
    decay: float = 0.99  # EMA decay
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0  # ignored with ema
    kmeans_init: bool = True  # initialise codes by k-means on the first training batches' latents
    kmeans_iters: int = 10
    kmeans_init_batches: int = 10  # collect up to this many batches (or 2 x codebook_size latents)
    dead_code_steps: int = 20  # re-seed codes unused for this many steps (0 = off)
    codebook_dim: int | None = None  # low-dimensional lookup space (None = latent_dim)
    affine: bool = False  # shared learnable scale/shift of all codes
    fsq_levels: tuple[int, ...] = (8, 8, 8)  # only for kind "fsq": codebook size = prod(levels)
    backend: Literal["auto", "matmul", "kdtree"] = "auto"
    chunk_size: int = 8192  # rows per distance chunk (bounds memory at chunk_size x codebook_size)

    def __post_init__(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise ConfigError("0 < decay < 1", field="quantizer.decay", found=self.decay)
        if self.commitment_weight < 0 or self.codebook_weight < 0:
            raise ConfigError(
                "non-negative loss weights",
                field="quantizer.commitment_weight",
                found=(self.commitment_weight, self.codebook_weight),
            )
        if self.dead_code_steps < 0:
            raise ConfigError(">= 0", field="quantizer.dead_code_steps", found=self.dead_code_steps)
        if self.codebook_dim is not None and self.codebook_dim < 1:
            raise ConfigError(
                ">= 1 or null", field="quantizer.codebook_dim", found=self.codebook_dim
            )
        if self.ema and self.affine:
            raise ConfigError(
                "affine: false when ema: true (the affine codebook is learned by gradient)",
                field="quantizer.affine",
                found=True,
            )
        if self.kind == "fsq" and (not self.fsq_levels or any(v < 3 for v in self.fsq_levels)):
            raise ConfigError(
                "a list of levels, each >= 3", field="quantizer.fsq_levels", found=self.fsq_levels
            )
        if self.kmeans_iters < 1 or self.kmeans_init_batches < 1:
            raise ConfigError(
                ">= 1",
                field="quantizer.kmeans_iters",
                found=(self.kmeans_iters, self.kmeans_init_batches),
            )
        if self.chunk_size < 1:
            raise ConfigError(">= 1", field="quantizer.chunk_size", found=self.chunk_size)


@dataclass
class TokenizerTrainConfig:
    """How the tokenizer is trained by :func:`jetfm.tokenizers.train.train_tokenizer`."""

    steps: int = 2000
    batch_size: int = 256  # jets per step
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    val_every: int = 250
    val_jets: int = 2000  # jets of the validation set evaluated at each check (0 = all)
    max_kmeans_particles: int = 200_000  # k-means tokenizer: particles used to fit
    kmeans_pt_weight: float = 0.0  # k-means tokenizer: weight particles by pT^this (0 = unweighted)
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "val_every"):
            if getattr(self, name) < 1:
                raise ConfigError(">= 1", field=f"train.{name}", found=getattr(self, name))
        if not self.lr > 0:
            raise ConfigError("> 0", field="train.lr", found=self.lr)
        if self.kmeans_pt_weight < 0:
            raise ConfigError(">= 0", field="train.kmeans_pt_weight", found=self.kmeans_pt_weight)
        if self.warmup_steps < 0 or self.val_jets < 0 or self.grad_clip < 0:
            raise ConfigError(
                "non-negative warmup_steps, val_jets and grad_clip",
                field="train",
                found=(self.warmup_steps, self.val_jets, self.grad_clip),
            )


@dataclass
class TokenizerConfig:
    """A particle tokenizer.

    ``type``: ``vqvae_particle`` (MLP per particle, MPM v1: codebook 512, latent 16),
    ``vqvae_conditional`` (transformer over the particle set, OmniJet-alpha: codebook 8192, latent 4),
    ``fsq`` (the per-particle MLP with an FSQ quantiser; codebook size = prod(quantizer.fsq_levels)),
    ``kmeans`` (nearest of ``codebook_size`` k-means centroids of the standardised features; no network).
    A conditional tokenizer with FSQ is ``vqvae_conditional`` with ``quantizer.kind: fsq``.
    """

    type: TokenizerType = "vqvae_particle"
    feature_names: tuple[str, ...] = ("deta", "dphi", "log_pt")
    codebook_size: int = 512
    latent_dim: int = 16
    hidden_dim: int = 128
    depth: int = 2  # hidden layers of each MLP, or transformer blocks of encoder and of decoder
    heads: int = 4
    mlp_ratio: float = 2.0
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    train: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)
    #: ``kmeans`` only: weights of the standardised features in the nearest-centroid distance, by
    #: name (unlisted: 1), in the fit and in encoding alike. A weight above 1 buys that feature
    #: finer cells at the others' expense, e.g. ``{deta: 1.5, dphi: 1.5}`` for the angular
    #: structure N-subjettiness sees (measured in BENCHMARKS.md, "tokenizer resolution")
    kmeans_feature_weights: dict[str, float] = field(default_factory=dict)
    #: ``kmeans`` only, 0 = off: two-level tokens. ``codebook_size / kmeans_residual_codes``
    #: k-means cells, then each particle's offset from its cell's centroid, divided by the cell's
    #: spread (per feature), is quantised by one shared codebook of this many residual codes;
    #: token = cell x kmeans_residual_codes + residual code. A token's two parts keep their
    #: meaning across cells (where in the cell, in units of its size), so a next-token model can
    #: predict a large vocabulary as cell, then residual (``task.factorised_head``) instead of
    #: through one softmax over every token
    kmeans_residual_codes: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.feature_names, list):
            self.feature_names = tuple(self.feature_names)
        if not self.feature_names:
            raise ConfigError("at least one feature", field="feature_names", found=[])
        if self.type == "fsq":
            self.quantizer.kind = "fsq"  # the type is shorthand for an MLP with an FSQ quantiser
        if self.quantizer.kind == "fsq" and self.type == "kmeans":
            raise ConfigError("quantizer.kind 'vq' for a kmeans tokenizer", field="quantizer.kind")
        if self.quantizer.kind == "fsq":
            if not self.quantizer.fsq_levels or any(v < 3 for v in self.quantizer.fsq_levels):
                raise ConfigError(
                    "a list of levels, each >= 3",
                    field="quantizer.fsq_levels",
                    found=self.quantizer.fsq_levels,
                )
            size = math.prod(self.quantizer.fsq_levels)
            if size != self.codebook_size:
                raise ConfigError(
                    f"codebook_size == prod(quantizer.fsq_levels) = {size}",
                    field="codebook_size",
                    found=self.codebook_size,
                )
        if self.codebook_size < 2:
            raise ConfigError(">= 2", field="codebook_size", found=self.codebook_size)
        for name in ("latent_dim", "hidden_dim", "heads"):
            if getattr(self, name) < 1:
                raise ConfigError(">= 1", field=name, found=getattr(self, name))
        if self.depth < 0:
            raise ConfigError(">= 0", field="depth", found=self.depth)
        if self.type == "vqvae_conditional" and self.hidden_dim % self.heads:
            raise ConfigError(
                f"hidden_dim divisible by heads ({self.heads})",
                field="hidden_dim",
                found=self.hidden_dim,
            )
        if self.mlp_ratio <= 0:
            raise ConfigError("> 0", field="mlp_ratio", found=self.mlp_ratio)
        w = self.kmeans_feature_weights
        if w and self.type != "kmeans":
            raise ConfigError(
                "no kmeans_feature_weights unless type: kmeans",
                field="kmeans_feature_weights",
                found=f"{w} with type {self.type}",
            )
        bad = {k: v for k, v in w.items() if k not in self.feature_names or not float(v) > 0}
        if bad:
            raise ConfigError(
                f"positive weights of features among {list(self.feature_names)}",
                field="kmeans_feature_weights",
                found=bad,
            )

        r = self.kmeans_residual_codes
        if r < 0 or (r and self.type != "kmeans"):
            raise ConfigError(
                ">= 0, and 0 unless type: kmeans",
                field="kmeans_residual_codes",
                found=f"{r} with type {self.type}",
            )
        if r and (r < 2 or self.codebook_size % r or self.codebook_size // r < 2):
            raise ConfigError(
                "a divisor >= 2 of codebook_size that leaves >= 2 cells",
                field="kmeans_residual_codes",
                found=f"{r} with codebook_size {self.codebook_size}",
            )

    @property
    def n_cells(self) -> int:
        """Coarse cells of a two-level k-means tokenizer (``codebook_size`` without residuals)."""
        r = self.kmeans_residual_codes
        return self.codebook_size // r if r else self.codebook_size

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def feature_weights(self) -> tuple[float, ...]:
        """The k-means distance weight of each feature, in column order (1 where unlisted)."""
        return tuple(float(self.kmeans_feature_weights.get(n, 1.0)) for n in self.feature_names)
