"""The native jet record: field names, dtypes and units shared by simulation, readers and the store.

A jet sample in memory is a :class:`JetBatch`: jagged particles stored flat (all particles of all jets
concatenated, each jet's particles sorted by decreasing pT) plus ``offsets`` (n_jets + 1), and one
value per jet for each jet field. Fields a source does not provide are simply absent (e.g. JetNet has no
PDG id); features that need an absent field raise an error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from jetfm.core.errors import InputError

# name -> (dtype, unit, description)
PARTICLE_FIELDS: dict[str, tuple[str, str, str]] = {
    "px": ("float32", "GeV", "momentum x"),
    "py": ("float32", "GeV", "momentum y"),
    "pz": ("float32", "GeV", "momentum z"),
    "energy": ("float32", "GeV", "energy"),
    "pt": ("float32", "GeV", "transverse momentum"),
    "eta": ("float32", "", "pseudorapidity"),
    "phi": ("float32", "rad", "azimuth in (-pi, pi]"),
    "charge": ("int8", "e", "electric charge"),
    "pid": ("int32", "", "PDG particle id (signed)"),
    "d0": ("float32", "mm", "signed transverse impact parameter (straight-line)"),
    "dz": ("float32", "mm", "longitudinal impact parameter (straight-line)"),
}
REQUIRED_PARTICLE_FIELDS = ("px", "py", "pz", "energy", "pt", "eta", "phi")

JET_FIELDS: dict[str, tuple[str, str, str]] = {
    "pt": ("float32", "GeV", "jet transverse momentum"),
    "eta": ("float32", "", "jet pseudorapidity"),
    "phi": ("float32", "rad", "jet azimuth"),
    "mass": ("float32", "GeV", "jet invariant mass"),
    "energy": ("float32", "GeV", "jet energy"),
    "n_particles": ("int32", "", "number of constituents"),
    "label": ("int32", "", "class index into the manifest's class list"),
    "tau21": ("float32", "", "N-subjettiness ratio tau2/tau1 (exclusive-kT axes, beta=1)"),
    "tau32": ("float32", "", "N-subjettiness ratio tau3/tau2"),
}
REQUIRED_JET_FIELDS = ("pt", "eta", "phi", "mass", "energy", "n_particles", "label")

# JetClass class names, in JetClass order (label_QCD ... label_Tbl).
JETCLASS_CLASSES: tuple[str, ...] = (
    "QCD",
    "Hbb",
    "Hcc",
    "Hgg",
    "H4q",
    "Hqql",
    "Zqq",
    "Wqq",
    "Tbqq",
    "Tbl",
)


@dataclass
class JetBatch:
    """Jagged jets in memory. ``particles[name]`` has one entry per particle; ``jets[name]`` per jet."""

    offsets: np.ndarray  # (n_jets + 1,) int64, offsets[0] == 0
    particles: dict[str, np.ndarray] = field(default_factory=dict)
    jets: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_jets(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_particles(self) -> int:
        return int(self.offsets[-1])

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def validate(self, source: str = "<memory>") -> JetBatch:
        """Check shapes, dtypes, finiteness and required fields; raise InputError naming the field."""
        off = np.asarray(self.offsets)
        if off.ndim != 1 or len(off) < 1 or off[0] != 0 or np.any(np.diff(off) < 0):
            raise InputError("non-decreasing offsets starting at 0", file=source, field="offsets")
        n_p, n_j = int(off[-1]), len(off) - 1
        for name in REQUIRED_PARTICLE_FIELDS:
            if name not in self.particles:
                raise InputError("a particle field", file=source, field=name, found="missing")
        for name in REQUIRED_JET_FIELDS:
            if name not in self.jets:
                raise InputError("a jet field", file=source, field=name, found="missing")
        for kind, arrays, n, spec in (
            ("particle", self.particles, n_p, PARTICLE_FIELDS),
            ("jet", self.jets, n_j, JET_FIELDS),
        ):
            for name, arr in arrays.items():
                if name not in spec:
                    raise InputError(
                        f"a known {kind} field {sorted(spec)}",
                        file=source,
                        field=name,
                        found="unknown",
                    )
                if arr.shape != (n,):
                    raise InputError(f"shape ({n},)", file=source, field=name, found=arr.shape)
                if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                    bad = int(np.count_nonzero(~np.isfinite(arr)))
                    raise InputError(
                        "finite values", file=source, field=name, found=f"{bad} NaN/Inf"
                    )
        if np.any(np.diff(off) == 0):
            raise InputError(
                "at least one particle per jet",
                file=source,
                field="n_particles",
                found=f"{int(np.sum(np.diff(off) == 0))} empty jets",
            )
        if not np.array_equal(self.jets["n_particles"], np.diff(off)):
            raise InputError("n_particles == offsets difference", file=source, field="n_particles")
        return self

    def cast(self) -> JetBatch:
        """Cast every field to its schema dtype (readers call this on mixed-dtype input)."""
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.particles = {
            k: np.asarray(v, dtype=PARTICLE_FIELDS[k][0]) for k, v in self.particles.items()
        }
        self.jets = {k: np.asarray(v, dtype=JET_FIELDS[k][0]) for k, v in self.jets.items()}
        return self

    def select(self, idx: np.ndarray) -> JetBatch:
        """A new batch with the jets at ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        counts = self.counts()[idx]
        starts = self.offsets[:-1][idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        take = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1])
        return JetBatch(
            offsets=offsets,
            particles={k: v[take] for k, v in self.particles.items()},
            jets={k: v[idx] for k, v in self.jets.items()},
        )

    def truncate(self, n_max: int) -> JetBatch:
        """Each jet keeps its first ``n_max`` particles (the highest-pT ones; jet fields unchanged)."""
        counts = self.counts()
        kept = np.minimum(counts, n_max)
        offsets = np.zeros(self.n_jets + 1, dtype=np.int64)
        np.cumsum(kept, out=offsets[1:])
        take = np.repeat(self.offsets[:-1] - offsets[:-1], kept) + np.arange(offsets[-1])
        jets = dict(self.jets)
        if "n_particles" in jets:
            jets["n_particles"] = kept.astype(jets["n_particles"].dtype)
        return JetBatch(
            offsets=offsets, particles={k: v[take] for k, v in self.particles.items()}, jets=jets
        )

    @staticmethod
    def concatenate(batches: list[JetBatch]) -> JetBatch:
        """Join batches that carry the same fields."""
        if not batches:
            raise ValueError("nothing to concatenate")
        counts = np.concatenate([b.counts() for b in batches])
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        pkeys = set(batches[0].particles)
        jkeys = set(batches[0].jets)
        for b in batches[1:]:
            if set(b.particles) != pkeys or set(b.jets) != jkeys:
                raise ValueError("batches carry different fields")
        return JetBatch(
            offsets=offsets,
            particles={k: np.concatenate([b.particles[k] for b in batches]) for k in pkeys},
            jets={k: np.concatenate([b.jets[k] for b in batches]) for k in jkeys},
        )
