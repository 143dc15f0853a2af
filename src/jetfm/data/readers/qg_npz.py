"""Quark/gluon jets in the EnergyFlow NPZ format (Komiske, Metodiev, Thaler 2019; arXiv 1810.05165).

Each file ``QG_jets*.npz`` holds ``X`` (N, M, 4) = ``pt, y, phi, pid`` per particle (pT in GeV,
rapidity, azimuth, PDG id) zero-padded to M, and ``y`` (N,) with 1 = quark, 0 = gluon. A 3-column
``X`` (no pid) is accepted; those particles are treated as massless and get no pid / charge.

A row of zeros is padding; every other row must have pT > 0. Four-momenta are rebuilt with the PDG
mass of each particle species: m_T = sqrt(pT^2 + m^2), E = m_T cosh y, pz = m_T sinh y. The azimuth
(stored in [0, 2pi) by EnergyFlow) is wrapped into (-pi, pi]. Charges come from the same table; a pid
outside it is an error (the table covers every particle Pythia leaves stable by default).
Jet kinematics are the E-scheme sum of the particles. Classes: ``["gluon", "quark"]``.

``X`` is streamed: the ``.npy`` member is read row block by row block straight out of the zip archive
(stored or deflated alike), so a 100k-jet file never needs to sit in memory as a whole.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from typing import IO, Any, ClassVar

import numpy as np

from jetfm.core.errors import InputError
from jetfm.data.readers._base import RawChunk, Reader, as_labels, as_numeric, check_finite
from jetfm.physics.kinematics import wrap_phi

# |pid| -> (mass in GeV, charge of the particle with positive pid)
PDG_TABLE: dict[int, tuple[float, int]] = {
    22: (0.0, 0),  # photon
    11: (0.000511, -1),  # electron
    13: (0.105658, -1),  # muon
    211: (0.139570, 1),  # pi+
    321: (0.493677, 1),  # K+
    130: (0.497611, 0),  # K_L
    310: (0.497611, 0),  # K_S
    2212: (0.938272, 1),  # proton
    2112: (0.939565, 0),  # neutron
    3122: (1.115683, 0),  # Lambda
    3112: (1.197449, -1),  # Sigma-
    3222: (1.189370, 1),  # Sigma+
    3312: (1.321710, -1),  # Xi-
    3322: (1.314860, 0),  # Xi0
    3334: (1.672450, -1),  # Omega-
    12: (0.0, 0),  # neutrinos (present only if the producer kept them)
    14: (0.0, 0),
    16: (0.0, 0),
}
_PIDS = np.array(sorted(PDG_TABLE), dtype=np.int64)
_MASS = np.array([PDG_TABLE[p][0] for p in _PIDS])
_CHARGE = np.array([PDG_TABLE[p][1] for p in _PIDS], dtype=np.int64)


def pid_mass_charge(pid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mass, charge, known) for signed PDG ids; ``known`` is False where the id is not tabulated."""
    apid = np.abs(pid).astype(np.int64)
    idx = np.clip(np.searchsorted(_PIDS, apid), 0, len(_PIDS) - 1)
    known = _PIDS[idx] == apid
    return _MASS[idx], _CHARGE[idx] * np.sign(pid).astype(np.int64), known


class _NpyStream:
    """Row blocks of one C-ordered ``.npy`` member of a zip archive, without loading it all."""

    def __init__(self, fh: IO[bytes]) -> None:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        if fortran or dtype.hasobject:
            raise ValueError("X must be a C-ordered numeric array (not Fortran order / objects)")
        self.fh, self.shape, self.dtype = fh, tuple(shape), dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def read_rows(self, n: int) -> np.ndarray:
        buf = self.fh.read(n * self.row_bytes)
        if len(buf) != n * self.row_bytes:
            raise ValueError(f"X ends early: wanted {n * self.row_bytes} bytes, got {len(buf)}")
        return np.frombuffer(buf, dtype=self.dtype).reshape((n, *self.shape[1:]))


class QGNpzReader(Reader):
    """Streams an EnergyFlow quark/gluon NPZ file."""

    format: ClassVar[str] = "qg_npz"
    description: ClassVar[str] = "quark/gluon NPZ file (EnergyFlow: X, y)"
    format_classes: ClassVar[tuple[str, ...]] = ("gluon", "quark")

    def _members(self, zf: zipfile.ZipFile) -> None:
        names = set(zf.namelist())
        for key in ("X", "y"):
            if f"{key}.npy" not in names:
                raise InputError(
                    "an array of the EnergyFlow quark/gluon format",
                    file=self.path,
                    field=key,
                    found=f"arrays {sorted(n.removesuffix('.npy') for n in names)}",
                )

    def _open_x(self, zf: zipfile.ZipFile) -> tuple[Any, _NpyStream]:
        fh = zf.open("X.npy")
        stream = _NpyStream(fh)
        if len(stream.shape) != 3 or stream.shape[2] not in (3, 4):
            fh.close()
            raise InputError(
                "shape (N, M, 4): pt, y, phi, pid", file=self.path, field="X", found=stream.shape
            )
        if stream.dtype.kind not in "biuf":
            fh.close()
            raise InputError("a numeric array", file=self.path, field="X", found=stream.dtype)
        return fh, stream

    def n_rows(self) -> int:
        def count() -> int:
            with zipfile.ZipFile(self.path) as zf:
                self._members(zf)
                fh, stream = self._open_x(zf)
                fh.close()
                return int(stream.shape[0])

        return int(self.wrap_errors(count))

    def _raw_chunks(self) -> Iterator[RawChunk]:
        with zipfile.ZipFile(self.path) as zf:
            self._members(zf)
            with zf.open("y.npy") as fy:
                y = np.load(fy, allow_pickle=False)
            fh, stream = self._open_x(zf)
            with fh:
                n_total = stream.shape[0]
                if y.shape != (n_total,):
                    raise InputError(
                        f"shape ({n_total},) like X", file=self.path, field="y", found=y.shape
                    )
                labels = as_labels(y, 2, file=self.path, field="y")
                for start in range(0, n_total, self.chunk_size):
                    stop = min(start + self.chunk_size, n_total)
                    x = stream.read_rows(stop - start)
                    yield self._chunk(x, labels[start:stop], start)

    def _chunk(self, x: np.ndarray, labels: np.ndarray, start: int) -> RawChunk:
        path = self.path
        x = check_finite(as_numeric(x, file=path, field="X"), file=path, field="X")
        mask = np.any(x != 0, axis=2)
        pt, rap, phi = x[..., 0][mask], x[..., 1][mask], x[..., 2][mask]
        if np.any(pt <= 0):
            raise InputError(
                "pt > 0 in every non-padding row",
                file=path,
                field="X[..., 0] (pt)",
                found=f"{int(np.count_nonzero(pt <= 0))} rows with pt <= 0",
            )
        particles: dict[str, np.ndarray] = {}
        if x.shape[2] == 4:
            pid_f = x[..., 3][mask]
            if np.any(pid_f != np.round(pid_f)):
                raise InputError("integer PDG ids", file=path, field="X[..., 3] (pid)")
            pid = pid_f.astype(np.int64)
            mass, charge, known = pid_mass_charge(pid)
            if not known.all():
                raise InputError(
                    f"PDG ids of stable particles {sorted(PDG_TABLE)} (either sign)",
                    file=path,
                    field="X[..., 3] (pid)",
                    found=f"ids {np.unique(pid[~known])[:10].tolist()}",
                )
            particles["pid"] = pid
            particles["charge"] = charge
        else:
            mass = np.zeros_like(pt)
        mt = np.sqrt(pt * pt + mass * mass)
        phi = wrap_phi(phi)
        particles.update(
            pt=pt,
            eta=np.arcsinh(mt * np.sinh(rap) / pt),
            phi=phi,
            px=pt * np.cos(phi),
            py=pt * np.sin(phi),
            pz=mt * np.sinh(rap),
            energy=mt * np.cosh(rap),
        )
        return RawChunk(
            rows=np.arange(start, start + len(x), dtype=np.int64),
            counts=mask.sum(axis=1).astype(np.int64),
            particles=particles,
            labels=labels,
        )
