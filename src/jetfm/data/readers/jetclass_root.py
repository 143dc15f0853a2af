"""JetClass ROOT files (Qu, Li, Qian 2022; arXiv 2202.03772), read with uproot.

Each file holds one TTree ``tree`` with one entry per jet: jagged particle branches (``part_*``), the
one-hot ``label_*`` branches and jet-level ``jet_*`` branches. What becomes of them:

- particles: ``part_px/py/pz/energy`` (GeV), ``part_charge`` -> charge, ``part_d0val`` /
  ``part_dzval`` -> d0 / dz (mm, as Delphes stores them). The other per-particle branches
  (``part_deta``, ``part_dphi``, ``part_d0err``, ``part_dzerr``) are derivable or not in the native
  schema and are not read.
- PDG id: JetClass does not store one. A *representative* id is rebuilt from the type flag and the
  charge: charged hadron -> +-211 (sign of the charge), neutral hadron -> 130 (K_L), photon -> 22,
  electron -> 11 for charge -1 and -11 for +1, muon -> 13 / -13 likewise. Each particle must have
  exactly one flag set; a charged type needs a non-zero charge. So ``pid`` identifies the particle
  *class* that Delphes's particle flow knew, not the true hadron species.
- jets: ``jet_pt/eta/phi/energy`` from the file; the mass is the E-scheme mass of the constituents
  (JetClass has no plain jet-mass branch; ``jet_sdmass`` is a groomed mass and is not used);
  ``tau21 = jet_tau2/jet_tau1`` and ``tau32 = jet_tau3/jet_tau2`` when the tau branches are present
  (0 where the denominator is 0). ``jet_nparticles`` must match the particle branches.
- label: index of the one set ``label_*`` branch, classes in JetClass order (QCD, Hbb, ... Tbl).

Branch dtypes differ between files (float32 labels, bool flags, ...): everything is cast.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from jetfm.core.errors import InputError
from jetfm.data.readers._base import (
    RawChunk,
    Reader,
    as_numeric,
    check_finite,
    one_hot_to_labels,
)
from jetfm.data.schema import JETCLASS_CLASSES

TREE = "tree"
PARTICLE_BRANCHES = {  # branch -> native field (None: read for the pid / checks only)
    "part_px": "px",
    "part_py": "py",
    "part_pz": "pz",
    "part_energy": "energy",
    "part_charge": "charge",
    "part_d0val": "d0",
    "part_dzval": "dz",
}
FLAG_BRANCHES = (
    "part_isChargedHadron",
    "part_isNeutralHadron",
    "part_isPhoton",
    "part_isElectron",
    "part_isMuon",
)
LABEL_BRANCHES = tuple(f"label_{c}" for c in JETCLASS_CLASSES)
JET_BRANCHES = {"jet_pt": "pt", "jet_eta": "eta", "jet_phi": "phi", "jet_energy": "energy"}
COUNT_BRANCH = "jet_nparticles"
TAU_BRANCHES = ("jet_tau1", "jet_tau2", "jet_tau3")
REQUIRED_BRANCHES = (
    *PARTICLE_BRANCHES,
    *FLAG_BRANCHES,
    *LABEL_BRANCHES,
    *JET_BRANCHES,
    COUNT_BRANCH,
)

# PDG id per type flag, for charge -1 / 0 / +1 (0 = impossible combination).
_PID_BY_FLAG = np.array(
    [
        [-211, 0, 211],  # charged hadron
        [0, 130, 0],  # neutral hadron
        [0, 22, 0],  # photon
        [11, 0, -11],  # electron
        [13, 0, -13],  # muon
    ],
    dtype=np.int32,
)


def pid_from_flags(flags: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Representative PDG id from (n, 5) one-hot type flags and the charge; 0 = inconsistent."""
    kind = np.argmax(flags, axis=1)
    q = np.clip(np.sign(charge), -1, 1).astype(np.int64) + 1
    return _PID_BY_FLAG[kind, q]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


class JetClassRootReader(Reader):
    """Streams a JetClass ROOT file entry range by entry range."""

    format: ClassVar[str] = "jetclass_root"
    description: ClassVar[str] = "JetClass ROOT file (TTree 'tree')"
    format_classes: ClassVar[tuple[str, ...]] = JETCLASS_CLASSES

    def _tree(self, file: Any) -> Any:
        if TREE not in file:
            raise InputError(
                f"a TTree '{TREE}'", file=self.path, field=TREE, found=f"keys {file.keys()}"
            )
        tree = file[TREE]
        keys = set(tree.keys())
        for b in REQUIRED_BRANCHES:
            if b not in keys:
                raise InputError("a JetClass branch", file=self.path, field=b, found="missing")
        return tree

    def n_rows(self) -> int:
        import uproot

        def count() -> int:
            with uproot.open(self.path) as f:
                return int(self._tree(f).num_entries)

        return int(self.wrap_errors(count))

    def _raw_chunks(self) -> Iterator[RawChunk]:
        import awkward as ak
        import uproot

        with uproot.open(self.path) as f:
            tree = self._tree(f)
            keys = set(tree.keys())
            taus = [b for b in TAU_BRANCHES if b in keys]
            branches = [*REQUIRED_BRANCHES, *taus]
            n_total = int(tree.num_entries)
            for start in range(0, n_total, self.chunk_size):
                stop = min(start + self.chunk_size, n_total)
                arrays = tree.arrays(branches, entry_start=start, entry_stop=stop, library="ak")
                yield self._chunk(arrays, ak, start, stop, has_tau=len(taus) == 3)

    def _chunk(self, arrays: Any, ak: Any, start: int, stop: int, *, has_tau: bool) -> RawChunk:
        path = self.path
        counts = None
        flat: dict[str, np.ndarray] = {}
        for b in (*PARTICLE_BRANCHES, *FLAG_BRANCHES):
            arr = arrays[b]
            if arr.ndim != 2:
                raise InputError(
                    "a jagged (one list per jet) branch", file=path, field=b, found=str(arr.type)
                )
            c = ak.to_numpy(ak.num(arr, axis=1)).astype(np.int64)
            if counts is None:
                counts = c
            elif not np.array_equal(c, counts):
                raise InputError(
                    "the same number of particles per jet as part_px", file=path, field=b
                )
            flat[b] = check_finite(
                as_numeric(ak.to_numpy(ak.flatten(arr, axis=1)), file=path, field=b),
                file=path,
                field=b,
            )
        assert counts is not None

        particles = {PARTICLE_BRANCHES[b]: flat[b] for b in PARTICLE_BRANCHES}
        flags = np.stack([flat[b] for b in FLAG_BRANCHES], axis=1)
        nset = (flags != 0).sum(axis=1)
        if np.any(nset != 1):
            i = int(np.flatnonzero(nset != 1)[0])
            raise InputError(
                "exactly one particle-type flag per particle",
                file=path,
                field="part_is*",
                found=f"{int(nset[i])} flags set on particle {i} of entries [{start}, {stop})",
            )
        charge = particles["charge"]
        if np.any(np.abs(charge - np.round(charge)) > 1e-3) or np.any(np.abs(charge) > 1):
            raise InputError("charges in {-1, 0, 1}", file=path, field="part_charge")
        pid = pid_from_flags(flags, charge)
        if np.any(pid == 0):
            i = int(np.flatnonzero(pid == 0)[0])
            raise InputError(
                "a charge consistent with the particle-type flag",
                file=path,
                field="part_charge",
                found=f"charge {charge[i]} with flag {FLAG_BRANCHES[int(np.argmax(flags[i]))]}",
            )
        particles["pid"] = pid
        particles["charge"] = np.round(charge)

        def jet_col(b: str) -> np.ndarray:
            a = arrays[b]
            if a.ndim != 1:
                raise InputError("one value per jet", file=path, field=b, found=str(a.type))
            return check_finite(as_numeric(ak.to_numpy(a), file=path, field=b), file=path, field=b)

        labels = one_hot_to_labels(
            np.stack([jet_col(b) for b in LABEL_BRANCHES], axis=1), file=path, field="label_*"
        )
        jets = {JET_BRANCHES[b]: jet_col(b) for b in JET_BRANCHES}
        nparts = jet_col(COUNT_BRANCH)
        if not np.array_equal(nparts, counts):
            i = int(np.flatnonzero(nparts != counts)[0])
            raise InputError(
                "jet_nparticles equal to the length of the particle branches",
                file=path,
                field=COUNT_BRANCH,
                found=f"{nparts[i]} vs {counts[i]} particles in entry {start + i}",
            )
        if has_tau:
            t1, t2, t3 = (jet_col(b) for b in TAU_BRANCHES)
            jets["tau21"] = _ratio(t2, t1)
            jets["tau32"] = _ratio(t3, t2)
        return RawChunk(
            rows=np.arange(start, stop, dtype=np.int64),
            counts=counts,
            particles=particles,
            labels=labels,
            jets=jets,
        )

    @staticmethod
    def sniff(path: Any) -> bool:
        """ROOT files start with the magic bytes ``root``."""
        try:
            with open(path, "rb") as fh:
                return fh.read(4) == b"root"
        except OSError:
            return False
