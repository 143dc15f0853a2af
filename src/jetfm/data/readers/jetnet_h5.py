"""JetNet HDF5 files (Kansal et al. 2021; arXiv 2106.11535), read with h5py.

Datasets:

- ``particle_features`` (N, P, 4) with P = 30 or 150: ``eta_rel, phi_rel, pt_rel, mask``
  (eta_rel = eta - jet eta, phi_rel = phi - jet phi, pt_rel = pT / jet pT); a 3-feature variant
  without the mask is accepted (then pt_rel > 0 marks real particles).
- ``jet_features`` in one of two layouts:
  * the published per-type files (``g.hdf5``, ``t150.hdf5``, ...): (N, 4) = ``pt, eta, mass,
    num_particles``; the jet type is not stored and is taken from the file name;
  * the JetNet library's in-memory order with the type first: (N, 4 or 5) = ``type, pt, eta, mass
    [, num_particles]`` with type an integer index into g, q, t, w, z.
  A first column whose values are all integers in 0..4 means the type-first layout (a jet pT of at
  most 4 GeV does not occur in JetNet, whose jets have pT around 1 TeV).

Absolute kinematics are rebuilt with the jet at phi = 0 (JetNet keeps no jet azimuth):
pT = pt_rel * jet pT, eta = eta_rel + jet eta, phi = phi_rel, and particles are massless
(E = pT cosh eta), as JetNet's own generators treat them. Jet pT, eta and mass come from the file,
the jet energy from them (E^2 = (pT cosh eta)^2 + m^2). ``num_particles`` counts the original jet's
particles (it may exceed P) and is not used. JetNet has no PDG id, charge or impact parameters, so
those fields are absent. Classes: ``["g", "q", "t", "w", "z"]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from jetfm.core.errors import InputError
from jetfm.data.readers._base import RawChunk, Reader, as_numeric, check_finite
from jetfm.physics.kinematics import ptetaphi_to_pxpypz, ptetaphim_to_energy, wrap_phi

JET_TYPES = ("g", "q", "t", "w", "z")
_NAME = re.compile(r"^([gqtwz])(30|150)?$")


class JetNetH5Reader(Reader):
    """Streams a JetNet HDF5 file slice by slice."""

    format: ClassVar[str] = "jetnet_h5"
    description: ClassVar[str] = "JetNet HDF5 file (particle_features, jet_features)"
    format_classes: ClassVar[tuple[str, ...]] = JET_TYPES

    def _datasets(self, f: Any) -> tuple[Any, Any]:
        for key in ("particle_features", "jet_features"):
            if key not in f:
                raise InputError(
                    "a JetNet dataset", file=self.path, field=key, found=f"keys {list(f.keys())}"
                )
        pf, jf = f["particle_features"], f["jet_features"]
        if pf.ndim != 3 or pf.shape[2] not in (3, 4):
            raise InputError(
                "shape (N, P, 4): eta_rel, phi_rel, pt_rel, mask",
                file=self.path,
                field="particle_features",
                found=pf.shape,
            )
        if jf.ndim != 2 or jf.shape[0] != pf.shape[0] or jf.shape[1] not in (4, 5):
            raise InputError(
                f"shape ({pf.shape[0]}, 4 or 5)",
                file=self.path,
                field="jet_features",
                found=jf.shape,
            )
        for key, ds in (("particle_features", pf), ("jet_features", jf)):
            if ds.dtype.kind not in "biuf":
                raise InputError("a numeric dataset", file=self.path, field=key, found=ds.dtype)
        return pf, jf

    def _layout(self, jf: Any) -> tuple[int | None, int]:
        """(column of the jet type or None, column of jet pT)."""
        first = np.asarray(jf[:, 0], dtype=np.float64)
        type_first = jf.shape[1] == 5 or bool(
            np.all(np.isfinite(first))
            and np.all(first == np.round(first))
            and first.min() >= 0
            and first.max() <= len(JET_TYPES) - 1
        )
        return (0, 1) if type_first else (None, 0)

    def _type_from_name(self) -> int:
        m = _NAME.match(self.path.stem.lower())
        if m is None:
            raise InputError(
                "a jet_features type column, or a file named after its jet type "
                "(g, q, t, w, z, optionally with 30/150: e.g. t150.hdf5)",
                file=self.path,
                field="jet_features",
                found=f"4 columns without a type and file name '{self.path.name}'",
            )
        return JET_TYPES.index(m.group(1))

    def n_rows(self) -> int:
        import h5py

        def count() -> int:
            with h5py.File(self.path, "r") as f:
                return int(self._datasets(f)[0].shape[0])

        return int(self.wrap_errors(count))

    def _raw_chunks(self) -> Iterator[RawChunk]:
        import h5py

        with h5py.File(self.path, "r") as f:
            pf, jf = self._datasets(f)
            type_col, pt_col = self._layout(jf)
            name_type = self._type_from_name() if type_col is None else None
            n_total = pf.shape[0]
            for start in range(0, n_total, self.chunk_size):
                stop = min(start + self.chunk_size, n_total)
                yield self._chunk(
                    pf[start:stop], jf[start:stop], type_col, pt_col, name_type, start
                )

    def _chunk(
        self,
        pf: np.ndarray,
        jf: np.ndarray,
        type_col: int | None,
        pt_col: int,
        name_type: int | None,
        start: int,
    ) -> RawChunk:
        path = self.path
        pf = check_finite(
            as_numeric(pf, file=path, field="particle_features"),
            file=path,
            field="particle_features",
        )
        jf = check_finite(
            as_numeric(jf, file=path, field="jet_features"), file=path, field="jet_features"
        )
        n = len(jf)
        if type_col is None:
            assert name_type is not None
            labels = np.full(n, name_type, dtype=np.int64)
        else:
            t = jf[:, type_col]
            if np.any(t != np.round(t)) or t.min() < 0 or t.max() > len(JET_TYPES) - 1:
                raise InputError(
                    f"jet type indices 0..{len(JET_TYPES) - 1} ({', '.join(JET_TYPES)})",
                    file=path,
                    field="jet_features[:, 0] (type)",
                    found=np.unique(t)[:10].tolist(),
                )
            labels = t.astype(np.int64)
        jet_pt, jet_eta, jet_mass = jf[:, pt_col], jf[:, pt_col + 1], jf[:, pt_col + 2]
        if np.any(jet_pt <= 0) or np.any(jet_mass < 0):
            raise InputError("jet pT > 0 and mass >= 0", file=path, field="jet_features (pt, mass)")
        eta_rel, phi_rel, pt_rel = pf[..., 0], pf[..., 1], pf[..., 2]
        mask = pf[..., 3] > 0 if pf.shape[2] == 4 else pt_rel > 0
        if np.any(pt_rel[mask] <= 0):
            raise InputError(
                "pt_rel > 0 for every real (mask = 1) particle",
                file=path,
                field="particle_features[..., 2] (pt_rel)",
                found=f"{int(np.count_nonzero(pt_rel[mask] <= 0))} particles with pt_rel <= 0",
            )
        counts = mask.sum(axis=1).astype(np.int64)
        pt = (pt_rel * jet_pt[:, None])[mask]
        eta = (eta_rel + jet_eta[:, None])[mask]
        phi = wrap_phi(phi_rel[mask])
        px, py, pz = ptetaphi_to_pxpypz(pt, eta, phi)
        particles = {
            "px": px,
            "py": py,
            "pz": pz,
            "energy": ptetaphim_to_energy(pt, eta, 0.0),
            "pt": pt,
            "eta": eta,
            "phi": phi,
        }
        jets = {
            "pt": jet_pt,
            "eta": jet_eta,
            "phi": np.zeros(n),
            "mass": jet_mass,
            "energy": ptetaphim_to_energy(jet_pt, jet_eta, jet_mass),
        }
        return RawChunk(
            rows=np.arange(start, start + n, dtype=np.int64),
            counts=counts,
            particles=particles,
            labels=labels,
            jets=jets,
        )
