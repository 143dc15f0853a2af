"""ParT-style NumPy arrays: a folder of ``.npy`` files as Particle Transformer studies export them.

Files (P = padded particle slots):

- ``pf_vectors.npy`` (N, 4, P): px, py, pz, E in GeV;
- ``pf_mask.npy`` (N, 1, P) (or (N, P)): 1 = real particle, 0 = padding;
- ``labels.npy`` (N,) integer labels, or (N, C) one-hot;
- ``pf_points.npy`` (N, 2, P): derived angles, not read. Checked on the shared quark/gluon sample:
  ``pf_points[:, 1]`` is phi - phi_jet and ``pf_points[:, 0]`` is (eta - eta_jet) * sign(eta_jet)
  (the ParT convention that folds the two detector halves), with the jet axis the E-scheme sum of
  the listed particles; both agree with values recomputed from ``pf_vectors`` to 4e-7.
  Other ``pf_*`` files (e.g. ``pf_features``) are ignored too.

Everything physical is recomputed from ``pf_vectors``; jet kinematics are the E-scheme sum of the
particles. There is no PDG id or charge. The arrays are memory-mapped and read ``chunk_size`` jets at
a time. Class names are not stored in the files: by default ``["gluon", "quark"]`` for two classes
(label 1 = quark, as in the quark/gluon sample) and ``class0, class1, ...`` otherwise; pass
``classes`` to name them (for this format the list names labels 0, 1, ... in order and must cover
every label present).
"""

from __future__ import annotations

from collections.abc import Iterator
from os import PathLike
from typing import ClassVar

import numpy as np

from jetfm.core.errors import InputError
from jetfm.data.readers._base import (
    DEFAULT_CHUNK_SIZE,
    RawChunk,
    Reader,
    as_labels,
    as_numeric,
    check_finite,
    one_hot_to_labels,
)

REQUIRED_FILES = ("pf_vectors.npy", "pf_mask.npy", "labels.npy")


class PartNpyReader(Reader):
    """Streams a folder of ParT-style ``.npy`` arrays."""

    format: ClassVar[str] = "part_npy"
    description: ClassVar[str] = "ParT-style .npy folder (pf_vectors, pf_mask, labels)"

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        max_particles: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        classes: list[str] | None = None,
    ) -> None:
        super().__init__(path, max_particles=max_particles, chunk_size=chunk_size, classes=None)
        if classes is not None and (
            isinstance(classes, str)
            or not classes
            or not all(isinstance(c, str) and c for c in classes)
            or len(set(classes)) != len(classes)
        ):
            raise InputError(
                "a non-empty list of distinct class names",
                file=self.path,
                field="classes",
                found=repr(classes),
            )
        self._names = None if classes is None else list(classes)

    def _load(self, name: str) -> np.ndarray:
        if not self.path.is_dir():
            raise InputError(
                "a folder holding pf_vectors.npy, pf_mask.npy and labels.npy",
                file=self.path,
                found="a file",
            )
        p = self.path / name
        if not p.is_file():
            raise InputError("a ParT array file", file=self.path, field=name, found="missing")
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
        if arr.dtype.kind not in "biuf":
            raise InputError("a numeric array", file=self.path, field=name, found=arr.dtype)
        return arr

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        vec, mask, lab = (self._load(n) for n in REQUIRED_FILES)
        n = vec.shape[0] if vec.ndim == 3 else -1
        if vec.ndim != 3 or vec.shape[1] != 4:
            raise InputError(
                "shape (N, 4, P): px, py, pz, E",
                file=self.path,
                field="pf_vectors",
                found=vec.shape,
            )
        if mask.ndim == 3 and mask.shape[1] == 1:
            mask = mask[:, 0, :]
        if mask.shape != (n, vec.shape[2]):
            raise InputError(
                f"shape ({n}, 1, {vec.shape[2]}) like pf_vectors",
                file=self.path,
                field="pf_mask",
                found=mask.shape,
            )
        if lab.shape[0] != n or lab.ndim not in (1, 2):
            raise InputError(
                f"shape ({n},) or ({n}, C) one-hot",
                file=self.path,
                field="labels",
                found=lab.shape,
            )
        return vec, mask, lab

    def _labels(self, lab: np.ndarray) -> np.ndarray:
        if lab.ndim == 2:
            return one_hot_to_labels(np.asarray(lab), file=self.path, field="labels")
        return as_labels(np.asarray(lab), 1 << 30, file=self.path, field="labels")

    def source_classes(self) -> tuple[str, ...]:
        lab = self._arrays()[2]
        if lab.ndim == 2:
            n_cls = int(lab.shape[1])
        else:
            labels = self._labels(lab)
            n_cls = int(labels.max()) + 1 if labels.size else 0
        if self._names is not None:
            if len(self._names) < n_cls:
                raise InputError(
                    f"a name for every label 0..{n_cls - 1}",
                    file=self.path,
                    field="classes",
                    found=repr(self._names),
                )
            return tuple(self._names)
        if n_cls <= 2:
            return ("gluon", "quark")
        return tuple(f"class{i}" for i in range(n_cls))

    def n_rows(self) -> int:
        return int(self.wrap_errors(lambda: self._arrays()[0].shape[0]))

    def _raw_chunks(self) -> Iterator[RawChunk]:
        vec, mask, lab = self._arrays()
        labels = self._labels(lab)
        path = self.path
        for start in range(0, vec.shape[0], self.chunk_size):
            stop = min(start + self.chunk_size, vec.shape[0])
            v = check_finite(
                as_numeric(vec[start:stop], file=path, field="pf_vectors"),
                file=path,
                field="pf_vectors",
            )
            m = check_finite(
                as_numeric(mask[start:stop], file=path, field="pf_mask"),
                file=path,
                field="pf_mask",
            )
            real = m > 0
            yield RawChunk(
                rows=np.arange(start, stop, dtype=np.int64),
                counts=real.sum(axis=1).astype(np.int64),
                particles={
                    "px": v[:, 0][real],
                    "py": v[:, 1][real],
                    "pz": v[:, 2][real],
                    "energy": v[:, 3][real],
                },
                labels=labels[start:stop],
            )
