"""A tiny deterministic tokenizer (grid over the first two features) and a synthetic jet problem."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn


class GridTokenizer(nn.Module):
    """Ids = 2-D grid cell of features 0 and 1 (``bins`` per axis over [-2, 2]); frozen by design."""

    def __init__(
        self, bins: int = 4, n_features: int = 3, preprocessing: dict | None = None
    ) -> None:
        super().__init__()
        self.bins = bins
        self.n_features = n_features
        self.preprocessing = preprocessing  # as a real tokenizer's: feature_names, mean, std
        self.register_buffer("edges", torch.linspace(-2, 2, bins + 1)[1:-1])

    @property
    def codebook_size(self) -> int:
        return self.bins * self.bins

    @property
    def feature_names(self) -> tuple[str, ...]:
        return ("deta", "dphi", "log_pt", "log_e", "charge")[: self.n_features]

    @torch.no_grad()
    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        i = torch.bucketize(x[..., 0].contiguous(), self.edges)
        j = torch.bucketize(x[..., 1].contiguous(), self.edges)
        return (i * self.bins + j).masked_fill(~mask, -1)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = ids >= 0
        width = 4.0 / self.bins
        ids = ids.clamp(min=0)
        centre = lambda k: -2 + width * (k.float() + 0.5)  # noqa: E731
        out = torch.zeros(*ids.shape, self.n_features)
        out[..., 0] = centre(ids // self.bins)
        out[..., 1] = centre(ids % self.bins)
        return out * mask[..., None]


class TwoLevelGridTokenizer(GridTokenizer):
    """The grid as a two-level vocabulary: cell = the feature-0 bin, residual code = the
    feature-1 bin (``kmeans_residual_codes = bins``), as a two-level k-means tokenizer lays out
    its ids."""

    def __init__(self, bins: int = 4, preprocessing: dict | None = None) -> None:
        super().__init__(bins, preprocessing=preprocessing)
        self.config = SimpleNamespace(kmeans_residual_codes=bins)

    @property
    def cell_centroids(self) -> torch.Tensor:
        ids = torch.arange(self.bins)[:, None] * self.bins + self.bins // 2  # (C, 1)
        feats = self.decode(ids, torch.ones_like(ids, dtype=torch.bool))[:, 0]  # (C, F)
        return feats * torch.tensor([1.0, 0.0, 1.0])  # centred on feature 1


def synthetic_batch(B: int = 32, N: int = 12, F: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Jets whose particles share a jet-level value z: feature 0 ~ z, feature 1 falls with pT rank.

    A masked particle is thus predictable from its jet's other particles (z) and its rank.
    """
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(3, N + 1, (B,), generator=g)
    mask = torch.arange(N)[None] < n[:, None]
    z = torch.randn(B, 1, generator=g)
    rank = torch.arange(N, dtype=torch.float32)[None].expand(B, -1)
    x = torch.zeros(B, N, F)
    x[..., 0] = z + 0.1 * torch.randn(B, N, generator=g)
    x[..., 1] = 1.5 - 3.0 * rank / N + 0.1 * torch.randn(B, N, generator=g)
    x[..., 2] = 0.3 * torch.randn(B, N, generator=g)
    x = x * mask[..., None]
    label = (z[:, 0] > 0).long()
    jet = torch.zeros(B, 5)
    return {"x": x, "mask": mask, "label": label, "jet": jet}
