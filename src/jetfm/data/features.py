"""Per-particle input features and their fitted, saved, exactly invertible standardisation.

Feature sets:

- ``kin3``: (Δη, Δφ, log pT) relative to the jet axis: the inputs of MPM v1 and OmniJet-α.
- ``full``: adds log E, log pT/pT_jet, log E/E_jet, ΔR, charge, five JetClass particle-type flags and
  tanh of the impact parameters (as ParT does, so displaced tracks stay O(1)).

Continuous features are standardised with a mean and standard deviation fitted on training jets;
charge and flags are passed through unchanged (they are categorical, and keeping them exact lets a
decoder round them). The fitted :class:`Preprocessing` is saved as JSON with the feature order, so a
checkpoint can always map model outputs back to physical particles.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jetfm.core.atomic import write_json_atomic
from jetfm.core.errors import InputError
from jetfm.data.schema import JetBatch
from jetfm.physics.kinematics import ptetaphim_to_energy, wrap_phi
from jetfm.physics.particles import PARTICLE_TYPES, particle_type_flags

FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "kin3": ("deta", "dphi", "log_pt"),
    "full": (
        "deta",
        "dphi",
        "log_pt",
        "log_e",
        "log_pt_rel",
        "log_e_rel",
        "delta_r",
        "charge",
        "is_charged_hadron",
        "is_neutral_hadron",
        "is_photon",
        "is_electron",
        "is_muon",
        "tanh_d0",
        "tanh_dz",
    ),
}
TYPE_FLAGS = PARTICLE_TYPES
# Features passed through unstandardised (categorical).
UNSCALED = frozenset({"charge", *TYPE_FLAGS})

# Raw particle fields each feature needs (beyond the jet axis).
_NEEDS: dict[str, tuple[str, ...]] = {
    "deta": ("eta",),
    "dphi": ("phi",),
    "log_pt": ("pt",),
    "log_e": ("energy",),
    "log_pt_rel": ("pt",),
    "log_e_rel": ("energy",),
    "delta_r": ("eta", "phi"),
    "charge": ("charge",),
    **{f: ("pid",) for f in TYPE_FLAGS},
    "tanh_d0": ("d0",),
    "tanh_dz": ("dz",),
}
# Jet fields the features and the loader need.
JET_KEYS = ("pt", "eta", "phi", "mass", "energy")
_PT_FLOOR = 1e-8  # log of a zero pT (never produced by the generator) would be -inf


def resolve_feature_names(feature_set: str | Sequence[str]) -> tuple[str, ...]:
    """A feature-set name (``kin3``/``full``) or an explicit list of feature names -> names."""
    if isinstance(feature_set, str):
        if feature_set not in FEATURE_SETS:
            raise InputError(
                f"one of {sorted(FEATURE_SETS)}", field="feature_set", found=repr(feature_set)
            )
        return FEATURE_SETS[feature_set]
    names = tuple(feature_set)
    for n in names:
        if n not in _NEEDS:
            raise InputError(f"a feature in {sorted(_NEEDS)}", field="features", found=repr(n))
    return names


def required_particle_fields(names: Sequence[str]) -> list[str]:
    """The raw particle fields that computing ``names`` reads from a store."""
    out: list[str] = []
    for n in names:
        for f in _NEEDS[n]:
            if f not in out:
                out.append(f)
    return out


def compute_features(batch: JetBatch, names: Sequence[str], source: str = "<batch>") -> np.ndarray:
    """Flat (n_particles, F) float32 feature matrix for jagged jets, in the order of ``names``."""
    names = resolve_feature_names(names)
    for f in required_particle_fields(names):
        if f not in batch.particles:
            raise InputError(
                f"particle field '{f}' (needed by features {list(names)})",
                file=source,
                field=f,
                found="absent in this store",
            )
    counts = batch.counts()
    per = {
        k: np.repeat(np.asarray(batch.jets[k], dtype=np.float64), counts)
        for k in ("pt", "eta", "phi", "energy")
    }
    p = batch.particles
    # (F, n) float32, one contiguous row per feature, transposed once at the end: stacking float64
    # columns and casting afterwards cost more than all the feature arithmetic
    out = np.empty((len(names), batch.n_particles), np.float32)
    cache: dict[str, np.ndarray] = {}

    def deta() -> np.ndarray:
        if "deta" not in cache:
            cache["deta"] = p["eta"].astype(np.float64) - per["eta"]
        return cache["deta"]

    def dphi() -> np.ndarray:
        if "dphi" not in cache:
            cache["dphi"] = wrap_phi(p["phi"].astype(np.float64) - per["phi"])
        return cache["dphi"]

    flags = None
    for j, n in enumerate(names):
        if n == "deta":
            c = deta()
        elif n == "dphi":
            c = dphi()
        elif n == "log_pt":
            c = np.log(np.maximum(p["pt"].astype(np.float64), _PT_FLOOR))
        elif n == "log_e":
            c = np.log(np.maximum(p["energy"].astype(np.float64), _PT_FLOOR))
        elif n == "log_pt_rel":
            c = np.log(np.maximum(p["pt"].astype(np.float64), _PT_FLOOR) / per["pt"])
        elif n == "log_e_rel":
            c = np.log(np.maximum(p["energy"].astype(np.float64), _PT_FLOOR) / per["energy"])
        elif n == "delta_r":
            c = np.hypot(deta(), dphi())
        elif n == "charge":
            c = p["charge"].astype(np.float64)
        elif n in TYPE_FLAGS:
            if flags is None:
                flags = particle_type_flags(p["pid"], strict=False, dtype=np.float64)
            c = flags[:, TYPE_FLAGS.index(n)]
        elif n == "tanh_d0":
            c = np.tanh(p["d0"].astype(np.float64))
        elif n == "tanh_dz":
            c = np.tanh(p["dz"].astype(np.float64))
        else:  # pragma: no cover - resolve_feature_names guards this
            raise AssertionError(n)
        out[j] = c
    return np.ascontiguousarray(out.T)  # (n, F)


@dataclass
class Preprocessing:
    """Feature order + standardisation stats; ``transform``/``inverse_transform`` are exact inverses."""

    feature_names: tuple[str, ...]
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    std: np.ndarray = field(default_factory=lambda: np.ones(0))
    max_particles: int = 128

    def __post_init__(self) -> None:
        self.feature_names = resolve_feature_names(self.feature_names)
        f = len(self.feature_names)
        self.mean = np.zeros(f) if self.mean.size == 0 else np.asarray(self.mean, dtype=np.float64)
        self.std = np.ones(f) if self.std.size == 0 else np.asarray(self.std, dtype=np.float64)
        if self.mean.shape != (f,) or self.std.shape != (f,):
            raise InputError(
                f"mean and std of shape ({f},)",
                field="preprocessing",
                found=(self.mean.shape, self.std.shape),
            )
        if (
            np.any(self.std <= 0)
            or not np.all(np.isfinite(self.std))
            or not np.all(np.isfinite(self.mean))
        ):
            raise InputError(
                "finite mean and positive std", field="preprocessing.std", found=self.std.tolist()
            )

    @classmethod
    def for_set(cls, feature_set: str | Sequence[str], max_particles: int = 128) -> Preprocessing:
        return cls(feature_names=resolve_feature_names(feature_set), max_particles=max_particles)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def fit(self, batch: JetBatch) -> Preprocessing:
        """Fit mean/std on the real particles of ``batch`` (training jets only)."""
        x = compute_features(batch, self.feature_names).astype(np.float64)
        if len(x) < 2:
            raise InputError(
                "at least two particles to fit on", field="preprocessing", found=len(x)
            )
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        for i, n in enumerate(self.feature_names):
            if n in UNSCALED:
                mean[i], std[i] = 0.0, 1.0
        std = np.where(std > 1e-6, std, 1.0)
        self.mean, self.std = mean, std
        return self

    def transform(self, x: Any) -> Any:
        """Physical features (..., F) -> standardised; numpy or torch (same type out)."""
        mean, std = self._stats_like(x)
        return (x - mean) / std

    def inverse_transform(self, x: Any) -> Any:
        """Standardised (..., F) -> physical features."""
        mean, std = self._stats_like(x)
        return x * std + mean

    def _stats_like(self, x: Any) -> tuple[Any, Any]:
        if isinstance(x, np.ndarray):
            return self.mean.astype(x.dtype, copy=False), self.std.astype(x.dtype, copy=False)
        import torch

        m = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)
        s = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)
        return m, s

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_names": list(self.feature_names),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "max_particles": int(self.max_particles),
            "unscaled": [n for n in self.feature_names if n in UNSCALED],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<preprocessing>") -> Preprocessing:
        for k in ("feature_names", "mean", "std"):
            if k not in d:
                raise InputError("a preprocessing record", file=source, field=k, found="missing")
        return cls(
            feature_names=tuple(d["feature_names"]),
            mean=np.asarray(d["mean"], dtype=np.float64),
            std=np.asarray(d["std"], dtype=np.float64),
            max_particles=int(d.get("max_particles", 128)),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Preprocessing:
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(
                "a readable preprocessing JSON file", file=path, found=str(exc)
            ) from exc
        return cls.from_dict(d, source=str(path))


def features_to_kinematics(
    x_phys: np.ndarray,
    names: Sequence[str],
    jet_pt: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
) -> dict[str, np.ndarray]:
    """Unstandardised features (..., F) back to physical particles (pt, eta, phi, massless energy).

    ``jet_*`` broadcast against the particle axes (e.g. shape (B, 1) for x of shape (B, N, F)).
    pT comes from ``log_pt`` if present, else from ``log_pt_rel`` times the jet pT.
    """
    names = list(names)
    x = np.asarray(x_phys, dtype=np.float64)
    if "deta" not in names or "dphi" not in names:
        raise InputError("features including 'deta' and 'dphi'", field="feature_names", found=names)
    eta = x[..., names.index("deta")] + np.asarray(jet_eta, dtype=np.float64)
    phi = wrap_phi(x[..., names.index("dphi")] + np.asarray(jet_phi, dtype=np.float64))
    if "log_pt" in names:
        pt = np.exp(x[..., names.index("log_pt")])
    elif "log_pt_rel" in names:
        pt = np.exp(x[..., names.index("log_pt_rel")]) * np.asarray(jet_pt, dtype=np.float64)
    else:
        raise InputError("a 'log_pt' or 'log_pt_rel' feature", field="feature_names", found=names)
    return {"pt": pt, "eta": eta, "phi": phi, "energy": ptetaphim_to_energy(pt, eta)}
