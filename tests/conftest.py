"""Shared fixtures: toy jets with correct kinematics (not physics-accurate: Pythia tests live elsewhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jetfm.data.schema import JetBatch
from jetfm.data.store import finalize_store, write_shard
from jetfm.physics.jets import jet_four_momentum
from jetfm.physics.kinematics import ptetaphi_to_pxpypz, wrap_phi

_PIDS = np.array([211, -211, 321, -321, 2212, 22, 130, 2112, 11, -11, 13, -13])
_CHARGE = np.array([1, -1, 1, -1, 1, 0, 0, 0, -1, 1, -1, 1])


def make_toy_jets(
    n_jets: int, seed: int = 0, n_classes: int = 2, mean_mult: float = 40.0
) -> JetBatch:
    """Jets of massless particles spread around a random axis; class 1 jets are wider and busier."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_jets)
    counts = 1 + rng.poisson(mean_mult * (1 + 0.4 * labels))
    offsets = np.zeros(n_jets + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    n = int(offsets[-1])
    jet_eta = np.repeat(rng.uniform(-1.5, 1.5, n_jets), counts)
    jet_phi = np.repeat(rng.uniform(-np.pi, np.pi, n_jets), counts)
    width = np.repeat(0.1 + 0.1 * labels, counts)
    eta = jet_eta + rng.normal(0, 1, n) * width
    phi = wrap_phi(jet_phi + rng.normal(0, 1, n) * width)
    pt = rng.exponential(10.0, n) + 0.5
    # sort by decreasing pT within each jet
    key = np.repeat(np.arange(n_jets), counts) * 1e6 - pt
    order = np.argsort(key, kind="stable")
    pt, eta, phi = pt[order], eta[order], phi[order]
    px, py, pz = ptetaphi_to_pxpypz(pt, eta, phi)
    energy = np.sqrt(px**2 + py**2 + pz**2)
    k = rng.integers(0, len(_PIDS), n)
    charged = _CHARGE[k] != 0
    particles = {
        "px": px,
        "py": py,
        "pz": pz,
        "energy": energy,
        "pt": pt,
        "eta": eta,
        "phi": phi,
        "charge": _CHARGE[k],
        "pid": _PIDS[k],
        "d0": np.where(charged, rng.normal(0, 0.05, n), 0.0),
        "dz": np.where(charged, rng.normal(0, 0.05, n), 0.0),
    }
    j = jet_four_momentum(px, py, pz, energy, offsets)
    jets = {k2: j[k2] for k2 in ("pt", "eta", "phi", "mass", "energy")}
    jets["n_particles"] = counts
    jets["label"] = labels
    return JetBatch(offsets=offsets, particles=particles, jets=jets).cast()


def write_toy_store(
    root: Path, n_per_split: dict[str, int], shard_size: int = 500, seed: int = 0
) -> Path:
    for si, (split, n) in enumerate(n_per_split.items()):
        for k, start in enumerate(range(0, n, shard_size)):
            b = make_toy_jets(min(shard_size, n - start), seed=seed * 1000 + si * 100 + k)
            write_shard(root, f"{split}-{k:04d}", b, split=split)
    finalize_store(root, classes=["QCD", "Tbqq"], source={"generator": "toy", "seed": seed})
    return root


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine two OpenMP threads spin."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy_store")
    return write_toy_store(root, {"train": 2000, "val": 300, "test": 300})
