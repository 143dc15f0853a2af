"""Streaming loader: native store -> padded ``(B, N, F)`` tensors with a bool mask.

How it streams (a store larger than RAM trains):

1. Every shard of the split is cut into *blocks* of ``block_size`` consecutive jets. Only shard sizes
   and per-jet multiplicities (``/offsets``) are read up front.
2. Each epoch, the block list is shuffled with a seed derived from ``(seed, epoch)``, then dealt to
   DDP ranks and then to loader workers (``blocks[rank::world][worker::workers]``), so no jet is seen
   twice per epoch and every rank/worker computes the same plan with no communication.
3. A worker takes ``group_blocks`` blocks at a time (jets from several shards), shuffles those jets,
   optionally sorts them into length buckets, cuts batches, and only then reads the data of that group.
   Memory is bounded by one group per worker.
4. Every rank yields the same number of batches (DDP needs it), and every worker of a rank the same
   number, so a global batch index maps to (worker, local index): ``start_batch`` resumes exactly
   mid-epoch without reading the skipped groups.

Each batch is padded only to its longest jet (capped at ``max_particles``, keeping the highest-pT
particles, which the store keeps first): with bucketing, padding costs almost no compute.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from jetfm.core.errors import ConfigError
from jetfm.data.features import (
    JET_KEYS,
    Preprocessing,
    compute_features,
    required_particle_fields,
)
from jetfm.data.schema import JetBatch
from jetfm.data.store import ShardReader, Store, token_path


@dataclass
class LoaderConfig:
    """How batches are formed. ``batch_size`` is per rank."""

    batch_size: int = 256
    max_particles: int = 128
    shuffle: bool = True
    seed: int = 0
    num_workers: int = 0
    bucketing: bool = True
    drop_last: bool = True
    block_size: int = 512
    group_blocks: int = 8

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_particles", "block_size", "group_blocks"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    "a positive integer", field=f"loader.{name}", found=getattr(self, name)
                )
        if self.num_workers < 0:
            raise ConfigError("an integer >= 0", field="loader.num_workers", found=self.num_workers)


@dataclass(frozen=True)
class _Block:
    shard: int
    start: int
    stop: int


class _Plan:
    """The deterministic batch plan of one (rank, worker) for one epoch."""

    def __init__(self, groups: list[tuple[list[_Block], list[np.ndarray]]]) -> None:
        # groups: (blocks to read, batches as index arrays into the concatenated group jets)
        self.groups = groups

    @property
    def n_batches(self) -> int:
        return sum(len(b) for _, b in self.groups)


class JetStream(IterableDataset):
    """Iterable over padded batches of one store split; see the module docstring for the scheme."""

    def __init__(
        self,
        store_root: str | os.PathLike[str],
        split: str,
        preprocessing: Preprocessing,
        cfg: LoaderConfig | None = None,
        *,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
        start_batch: int = 0,
        with_tokens: str | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg or LoaderConfig()
        if not 0 <= rank < world_size:
            raise ConfigError(f"0 <= rank < world_size={world_size}", field="rank", found=rank)
        self.store = Store(store_root)
        self.split = split
        self.pre = preprocessing
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = epoch, start_batch
        self.paths = self.store.shards(split)
        self.pfields = required_particle_fields(preprocessing.feature_names)
        for f in self.pfields:
            if f not in self.store.particle_fields:
                raise ConfigError(
                    f"a store with particle field '{f}' (needed by features {list(preprocessing.feature_names)})",
                    file=self.store.root,
                    field=f,
                    found=f"fields {self.store.particle_fields}",
                )
        self.counts = []  # per shard: multiplicity of each jet
        for p in self.paths:
            with h5py.File(p, "r") as f:
                self.counts.append(np.diff(f["offsets"][...]).astype(np.int64))
        self.tokens = with_tokens
        if with_tokens is not None:
            for p in self.paths:
                if not token_path(self.store.root, with_tokens, p).is_file():
                    raise ConfigError(
                        f"token ids '{with_tokens}' for every shard (run `jetfm tokenize` first)",
                        file=token_path(self.store.root, with_tokens, p),
                        field="tokens",
                        found="missing",
                    )
        self._warned = False

    # ---- planning (metadata only) -------------------------------------------------------
    def _blocks(self) -> list[_Block]:
        bs = self.cfg.block_size
        blocks = [
            _Block(i, s, min(s + bs, len(c)))
            for i, c in enumerate(self.counts)
            for s in range(0, len(c), bs)
        ]
        if self.cfg.shuffle:
            rng = np.random.default_rng([self.cfg.seed, self.epoch, 17])
            blocks = [blocks[i] for i in rng.permutation(len(blocks))]
        return blocks

    def _plan_for(self, rank: int, worker: int, n_workers: int) -> _Plan:
        mine = self._blocks()[rank :: self.world_size][worker::n_workers]
        g = self.cfg.group_blocks
        rng = np.random.default_rng([self.cfg.seed, self.epoch, rank, worker, 29])
        groups: list[tuple[list[_Block], list[np.ndarray]]] = []
        for i in range(0, len(mine), g):
            blocks = mine[i : i + g]
            n = sum(b.stop - b.start for b in blocks)
            order = rng.permutation(n) if self.cfg.shuffle else np.arange(n)
            bsz = self.cfg.batch_size
            n_full = n // bsz
            last = i + g >= len(mine)
            if self.cfg.bucketing:
                mult = np.concatenate([self.counts[b.shard][b.start : b.stop] for b in blocks])
                mult = np.minimum(mult, self.cfg.max_particles)
                # stable sort of the shuffled order by length: buckets of similar length
                order = order[np.argsort(mult[order], kind="stable")]
            batches = [order[j * bsz : (j + 1) * bsz] for j in range(n_full)]
            if n % bsz and last and not self.cfg.drop_last:
                batches.append(order[n_full * bsz :])
            if self.cfg.shuffle and self.cfg.bucketing:
                batches = [batches[j] for j in rng.permutation(len(batches))]
            groups.append((blocks, batches))
        return _Plan(groups)

    def batches_per_worker(self, n_workers: int) -> int:
        """Batches each worker of each rank yields (equal everywhere, so DDP ranks stay in step)."""
        counts = [
            self._plan_for(r, w, n_workers).n_batches
            for r in range(self.world_size)
            for w in range(n_workers)
        ]
        return min(counts) if counts else 0

    def __len__(self) -> int:
        n_workers = max(1, self.cfg.num_workers)
        return self.batches_per_worker(n_workers) * n_workers - min(
            self.start_batch, self.batches_per_worker(n_workers) * n_workers
        )

    # ---- reading -----------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        # The DataLoader takes batches from its workers round-robin, starting at worker 0, so
        # global batch g is local batch g // n_workers of worker g % n_workers. After resuming at
        # ``start_batch``, worker w must produce global batches start + w, start + w + n_workers, ...:
        # those of the original worker (start + w) % n_workers, from its local index (start + w) // n_workers.
        owner = (self.start_batch + worker) % n_workers
        plan = self._plan_for(self.rank, owner, n_workers)
        cap = self.batches_per_worker(n_workers)
        skip = (self.start_batch + worker) // n_workers
        files: dict[int, ShardReader] = {}
        try:
            produced = 0
            for blocks, batches in plan.groups:
                if produced >= cap:
                    break
                take = batches[: cap - produced]
                if skip >= len(take):
                    skip -= len(take)
                    produced += len(take)
                    continue
                data, ids = self._read_group(blocks, files)
                x, offsets = self._features(data)
                for b in take[skip:]:
                    out = self._pad(x, offsets, data, b)
                    if ids is not None:
                        out["tokens"] = pad_ids(ids, offsets, b, out["mask"].shape[1])
                    yield out
                produced += len(take)
                skip = 0
        finally:
            for f in files.values():
                f.close()

    def _read_group(
        self, blocks: list[_Block], files: dict[int, ShardReader]
    ) -> tuple[JetBatch, np.ndarray | None]:
        """The jets of ``blocks`` (and their token ids + a final -1, if tokens were asked for)."""
        parts, ids = [], []
        for b in blocks:
            if b.shard not in files:
                files[b.shard] = ShardReader.open(self.paths[b.shard])
            reader = files[b.shard]
            parts.append(
                reader.read(
                    b.start, b.stop, particle_fields=self.pfields, jet_fields=[*JET_KEYS, "label"]
                )
            )
            if self.tokens is not None:
                p0, p1 = int(reader.offsets[b.start]), int(reader.offsets[b.stop])
                with h5py.File(
                    token_path(self.store.root, self.tokens, self.paths[b.shard]), "r"
                ) as f:
                    ids.append(f["ids"][p0:p1])
        data = JetBatch.concatenate(parts) if len(parts) > 1 else parts[0]
        return data, (np.concatenate([*ids, np.full(1, -1, np.int32)]) if ids else None)

    def _features(self, data: JetBatch) -> tuple[np.ndarray, np.ndarray]:
        x = compute_features(data, self.pre.feature_names)  # (P, F) flat
        x = self.pre.transform(x).astype(np.float32, copy=False)
        return with_pad_row(x), data.offsets

    def _pad(
        self, x: np.ndarray, offsets: np.ndarray, data: JetBatch, idx: np.ndarray
    ) -> dict[str, torch.Tensor]:
        n_max = self.cfg.max_particles
        if not self._warned and (offsets[idx + 1] - offsets[idx]).max(initial=0) > n_max:
            self._warned = True
            warnings.warn(
                f"{self.store.root}: some jets have more than max_particles={n_max} particles;"
                " keeping the highest-pT ones (said once)",
                stacklevel=2,
            )
        return pad_batch(x, offsets, data, idx, n_max)


def pad_ids(ids: np.ndarray, offsets: np.ndarray, idx: np.ndarray, n: int) -> torch.Tensor:
    """Token ids (P + 1,) whose last entry is -1 -> padded (B, N) int64, -1 on padding."""
    counts = np.minimum(offsets[idx + 1] - offsets[idx], n)
    mask = np.arange(n)[None, :] < counts[:, None]  # (B, N)
    src = np.where(mask, offsets[idx][:, None] + np.arange(n)[None, :], len(ids) - 1)  # (B, N)
    return torch.from_numpy(ids[src].astype(np.int64))


def with_pad_row(x: np.ndarray) -> np.ndarray:
    """(P, F) -> (P + 1, F) with a final zero row (the padding value)."""
    return np.concatenate([x, np.zeros((1, x.shape[1]), dtype=x.dtype)])


def pad_batch(
    x: np.ndarray, offsets: np.ndarray, data: JetBatch, idx: np.ndarray, max_particles: int
) -> dict[str, torch.Tensor]:
    """Gather jets ``idx`` of flat features ``x`` (P + 1, F) into a padded batch dict.

    ``x`` holds the particles' features followed by one row of zeros used for padding (see
    :func:`with_pad_row`), so padding is a single ``np.take``.

    Jets longer than ``max_particles`` keep their first (highest-pT) particles.
    """
    counts = np.minimum(offsets[idx + 1] - offsets[idx], max_particles)
    n = int(counts.max(initial=1))
    mask = np.arange(n)[None, :] < counts[:, None]  # (B, N)
    # one gather; padded slots point at the zero row that x carries at its end
    src = np.where(mask, offsets[idx][:, None] + np.arange(n)[None, :], len(x) - 1)  # (B, N)
    out = np.take(x, src, axis=0)  # (B, N, F)
    jet = np.stack([data.jets[k][idx] for k in JET_KEYS], axis=-1).astype(np.float32)  # (B, 5)
    return {
        "x": torch.from_numpy(out),
        "mask": torch.from_numpy(mask),
        "label": torch.from_numpy(data.jets["label"][idx].astype(np.int64)),
        "jet": torch.from_numpy(jet),
    }


def make_dataloader(
    store_root: str | os.PathLike[str],
    split: str,
    preprocessing: Preprocessing,
    cfg: LoaderConfig | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
    start_batch: int = 0,
    tokens: str | None = None,
) -> DataLoader:
    """A torch DataLoader yielding dicts: x (B,N,F), mask (B,N) bool, label (B,), jet (B,5),
    and tokens (B,N) int64 (-1 on padding) when ``tokens`` names a token set of the store."""
    cfg = cfg or LoaderConfig()
    ds = JetStream(
        store_root,
        split,
        preprocessing,
        cfg,
        rank=rank,
        world_size=world_size,
        epoch=epoch,
        start_batch=start_batch,
        with_tokens=tokens,
    )
    return DataLoader(
        ds,
        batch_size=None,
        num_workers=cfg.num_workers,
        persistent_workers=False,
    )


def load_padded(
    store_root: str | os.PathLike[str],
    split: str,
    preprocessing: Preprocessing,
    max_particles: int = 128,
    limit: int | None = None,
) -> dict[str, Any]:
    """A whole split (or its first ``limit`` jets) as one padded batch in memory, in store order."""
    store = Store(store_root)
    fields = required_particle_fields(preprocessing.feature_names)
    data = store.read(split, limit=limit, particle_fields=fields, jet_fields=[*JET_KEYS, "label"])
    x = preprocessing.transform(compute_features(data, preprocessing.feature_names)).astype(
        np.float32
    )
    if data.counts().max(initial=0) > max_particles:
        warnings.warn(
            f"{store.root}: some jets have more than max_particles={max_particles} particles;"
            " keeping the highest-pT ones",
            stacklevel=2,
        )
    return pad_batch(with_pad_row(x), data.offsets, data, np.arange(data.n_jets), max_particles)


def default_store_path() -> Path:
    """Where the CLI looks for the embedded default sample when no store is given."""
    return Path(os.environ.get("JETFM_DATA", "data/default"))
