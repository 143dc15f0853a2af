"""A tiny task and a synthetic, resumable loader factory for the training-loop tests.

The task is deliberately not one of jetfm's: the loop must work with any module that has
``loss(batch) -> dict`` and ``save_pretrained``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jetfm.core.checkpoint import save_checkpoint
from jetfm.train import TrainConfig


class TinyTask(nn.Module):
    """Mean-pooled per-particle MLP classifier with dropout (so training draws random numbers)."""

    def __init__(
        self,
        n_features: int = 3,
        dim: int = 16,
        n_classes: int = 2,
        dropout: float = 0.1,
        drop_particles: float = 0.0,
        lr_factors: dict[str, float] | None = None,
    ):
        super().__init__()
        self.drop_particles = drop_particles
        self._lr_factors = lr_factors or {}
        self.config = {"n_features": n_features, "dim": dim, "n_classes": n_classes}
        self.embed = nn.Linear(n_features, dim)  # (B, N, F) -> (B, N, D)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, n_classes)

    def lr_factors(self) -> dict[str, float]:
        return self._lr_factors

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x, mask = batch["x"], batch["mask"]  # (B, N, F), (B, N)
        if self.drop_particles:
            # like masked particle modelling, draw random numbers in training *and* validation
            mask = mask & (torch.rand(mask.shape) > self.drop_particles)  # (B, N)
        h = self.drop(torch.relu(self.norm(self.embed(x))))  # (B, N, D)
        m = mask[..., None].to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, D)
        logits = self.head(pooled)  # (B, C)
        loss = F.cross_entropy(logits, batch["label"])
        acc = (logits.argmax(-1) == batch["label"]).float().mean()
        return {"loss": loss, "accuracy": acc.detach()}

    def save_pretrained(
        self, path: str | Path, *, preprocessing: dict | None = None, meta: dict | None = None
    ) -> Path:
        path = Path(path)
        save_checkpoint(
            path / "task",
            self.state_dict(),
            self.config,
            kind="tiny",
            preprocessing=preprocessing,
            meta=meta,
        )
        return path


class SyntheticJets:
    """Loader factory over a fixed synthetic dataset, honouring rank/world_size/epoch/start_batch.

    Global batch ``i`` of an epoch is ``batch_size * world_size`` consecutive jets of a permutation
    seeded by (seed, epoch); rank ``r`` takes the ``r``-th slice. Like a torch DataLoader, it also
    draws from torch's *global* RNG (once per batch), which the loop must keep away from training.
    """

    def __init__(
        self,
        n_jets: int = 96,
        n_particles: int = 8,
        n_features: int = 3,
        batch_size: int = 8,
        seed: int = 0,
        sleep: float = 0.0,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n_jets, n_particles, n_features, generator=g)  # (J, N, F)
        lengths = torch.randint(1, n_particles + 1, (n_jets,), generator=g)
        self.mask = torch.arange(n_particles)[None, :] < lengths[:, None]  # (J, N)
        self.label = (self.x[..., 0].mean(1) > 0).long()  # learnable from the features
        self.batch_size, self.seed, self.sleep = batch_size, seed, sleep
        self.n_jets = n_jets

    def n_batches(self, world_size: int) -> int:
        return self.n_jets // (self.batch_size * world_size)

    def __call__(
        self, *, rank: int, world_size: int, epoch: int, start_batch: int
    ) -> Iterator[dict[str, Any]]:
        perm = torch.randperm(
            self.n_jets, generator=torch.Generator().manual_seed(self.seed * 1000 + epoch)
        )
        bs, gbs = self.batch_size, self.batch_size * world_size
        for i in range(start_batch, self.n_batches(world_size)):
            torch.rand(1)  # a global-RNG draw, as DataLoader iterators make
            if self.sleep:
                time.sleep(self.sleep)
            idx = perm[i * gbs + rank * bs : i * gbs + (rank + 1) * bs]
            yield {"x": self.x[idx], "mask": self.mask[idx], "label": self.label[idx]}


def tiny_config(run_dir: Path, **kw: Any) -> TrainConfig:
    """A quiet CPU config for tests."""
    base: dict[str, Any] = dict(
        output_dir=run_dir,
        max_steps=12,
        accelerator="cpu",
        devices=1,
        log_every=1,
        checkpoint_every=5,
        keep_last=2,
        val_every=0,
        deterministic=True,
        progress_bar=False,
        quiet=True,
    )
    base.update(kw)
    return TrainConfig(**base)
