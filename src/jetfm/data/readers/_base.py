"""What every reader shares: option checks, chunk assembly into a :class:`JetBatch`, error wrapping.

A format reader only knows how to pull one chunk of raw jets out of its file (a :class:`RawChunk`:
flat particles in file order, per-jet counts, labels in the format's own class list, and whatever jet
fields the file provides). :meth:`Reader.iter_indexed` turns each raw chunk into a validated batch the
same way for every format, so the rules below hold everywhere:

- particles are sorted by decreasing pT inside each jet;
- jet pT, eta, phi, mass and energy the file lacks are the E-scheme sum of *all* the jet's particles
  (computed before any truncation, so a storage limit never changes the jet's kinematics);
- jets with no particles are skipped and counted (a file with no non-empty jet at all is an error):
  some public files carry a few of them and refusing the whole file would be unhelpful;
- with ``max_particles`` a longer jet keeps its highest-pT particles; one
  :class:`ParticleTruncationWarning` per pass reports how many jets were cut;
- any exception from the underlying I/O library becomes an :class:`InputError` naming the file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from jetfm.core.errors import InputError
from jetfm.data.schema import JetBatch
from jetfm.physics.jets import jet_four_momentum
from jetfm.physics.kinematics import pxpypz_to_ptetaphi

DEFAULT_CHUNK_SIZE = 10_000
KINEMATIC_JET_FIELDS = ("pt", "eta", "phi", "mass", "energy")


class ParticleTruncationWarning(UserWarning):
    """Some jets had more particles than ``max_particles``; their lowest-pT particles were dropped."""


class EmptyJetsWarning(UserWarning):
    """Some jets had no particles and were skipped."""


@dataclass
class ReadStats:
    """Counts from one pass over a file (reported in the store manifest's ``source``)."""

    n_rows: int = 0  # jets (rows / entries) read from the file
    n_jets: int = 0  # jets yielded
    n_empty: int = 0  # skipped: no particles
    n_other_class: int = 0  # skipped: class not in the requested ``classes``
    n_truncated: int = 0  # kept, but cut to ``max_particles``

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class RawChunk:
    """One chunk of jets as a format reader found them (before sorting / filtering / truncation)."""

    rows: np.ndarray  # (n,) int64: index of each jet in the input file
    counts: np.ndarray  # (n,) particles per jet; particle arrays are flat in jet order
    particles: dict[str, np.ndarray]  # must hold px, py, pz, energy (pt, eta, phi added if absent)
    labels: np.ndarray  # (n,) int: index into the reader's ``format_classes``
    jets: dict[str, np.ndarray] = field(default_factory=dict)  # jet fields the file provides


def check_int_option(value: object, name: str, *, minimum: int, allow_none: bool = False) -> None:
    """Raise InputError unless ``value`` is an int >= minimum (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InputError(
            f"an integer >= {minimum}" + (" or None" if allow_none else ""),
            field=name,
            found=repr(value),
        )


def as_numeric(arr: Any, *, file: Path, field: str, dtype: str = "float64") -> np.ndarray:
    """``arr`` as a numeric array of ``dtype``; strings / objects raise an InputError naming ``field``."""
    a = np.asarray(arr)
    if a.dtype.kind not in "biuf":
        raise InputError("a numeric (bool/int/float) array", file=file, field=field, found=a.dtype)
    return a.astype(dtype, copy=False)


def check_finite(arr: np.ndarray, *, file: Path, field: str) -> np.ndarray:
    """Raise InputError naming the *source* field if ``arr`` holds NaN or Inf."""
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            raise InputError(
                "finite values", file=file, field=field, found=f"{int(bad.sum())} NaN/Inf"
            )
    return arr


def as_labels(arr: Any, n_classes: int, *, file: Path, field: str) -> np.ndarray:
    """Integer labels in [0, n_classes) from ints, bools or integer-valued floats."""
    a = check_finite(as_numeric(arr, file=file, field=field), file=file, field=field)
    if a.ndim != 1:
        raise InputError("a 1-D label array", file=file, field=field, found=f"shape {a.shape}")
    if np.any(a != np.round(a)) or (a.size and (a.min() < 0 or a.max() >= n_classes)):
        found = np.unique(a)[:10].tolist()
        raise InputError(
            f"integer labels in [0, {n_classes})", file=file, field=field, found=f"values {found}"
        )
    return a.astype(np.int64)


def one_hot_to_labels(onehot: np.ndarray, *, file: Path, field: str) -> np.ndarray:
    """(n, C) one-hot (bool or 0/1 floats) -> (n,) class index; anything else is an InputError."""
    a = check_finite(as_numeric(onehot, file=file, field=field), file=file, field=field)
    ok = np.all((a == 0) | (a == 1), axis=1) & (a.sum(axis=1) == 1)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise InputError(
            "one-hot labels (exactly one 1 per jet)",
            file=file,
            field=field,
            found=f"row {bad}: {a[bad].tolist()}",
        )
    return np.argmax(a, axis=1).astype(np.int64)


def padded_to_flat(
    mask: np.ndarray, arrays: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(n, P) padded arrays + (n, P) bool mask -> per-jet counts and flat arrays in jet order."""
    counts = mask.sum(axis=1).astype(np.int64)
    return counts, {k: np.asarray(v)[mask] for k, v in arrays.items()}


def pt_descending_order(
    pt: np.ndarray, counts: np.ndarray, offsets: np.ndarray
) -> np.ndarray | None:
    """Permutation of flat particles that sorts each jet by decreasing pT (stable); None if sorted.

    Most public files are already sorted, so that case costs one pass. Otherwise each jet is sorted
    as one row of a padded (n_jets, longest) array: many short sorts, about 4x faster than one
    ``np.lexsort`` over all particles. A chunk with one extremely long jet falls back to lexsort to
    bound the padded array's memory.
    """
    n = len(counts)
    jet_of = np.repeat(np.arange(n), counts)
    same_jet = jet_of[1:] == jet_of[:-1]
    if not np.any(np.diff(pt)[same_jet] > 0):
        return None
    longest = int(counts.max())
    if n * longest > 8 * max(len(pt), 1) + 1_000_000:
        return np.lexsort((-pt, jet_of))
    pos = np.arange(len(pt)) - offsets[:-1][jet_of]
    padded = np.full((n, longest), np.inf)
    padded[jet_of, pos] = -pt
    rows = np.argsort(padded, axis=1, kind="stable")
    valid = np.arange(longest)[None, :] < counts[:, None]
    return (rows + offsets[:-1][:, None])[valid]


class Reader:
    """Base class: streams one input file as :class:`JetBatch` chunks.

    Subclasses set ``format`` / ``description`` / ``format_classes`` and implement
    :meth:`n_rows` and :meth:`_raw_chunks`. ``classes`` picks a subset (and order) of the format's
    classes: other jets are skipped and labels index the given list.
    """

    format: ClassVar[str] = ""
    description: ClassVar[str] = ""
    format_classes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        max_particles: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        classes: list[str] | None = None,
    ) -> None:
        check_int_option(max_particles, "max_particles", minimum=1, allow_none=True)
        check_int_option(chunk_size, "chunk_size", minimum=1)
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(
                f"an existing {self.description}", file=self.path, found="no such path"
            )
        self.max_particles = None if max_particles is None else int(max_particles)
        self.chunk_size = int(chunk_size)
        if isinstance(classes, str):
            raise InputError(
                "a list of class names, not one string", field="classes", found=repr(classes)
            )
        self._requested_classes = None if classes is None else list(classes)
        self.stats = ReadStats()
        self._class_map: np.ndarray | None = None
        self._classes: list[str] | None = None

    # ---- to implement -------------------------------------------------------------------------
    def n_rows(self) -> int:
        """Number of jets (rows / entries) in the input, before any filtering."""
        raise NotImplementedError

    def _raw_chunks(self) -> Iterator[RawChunk]:
        raise NotImplementedError

    def source_classes(self) -> tuple[str, ...]:
        """The format's class names, in label order (may depend on the file for some formats)."""
        return self.format_classes

    # ---- shared ------------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        """Output class names: labels of the yielded batches index this list."""
        if self._classes is None:
            self._resolve_classes()
        assert self._classes is not None
        return list(self._classes)

    def _resolve_classes(self) -> None:
        src = list(self.wrap_errors(self.source_classes))
        req = self._requested_classes
        if req is None:
            self._classes = src
            self._class_map = np.arange(len(src), dtype=np.int64)
            return
        if (
            not req
            or not all(isinstance(c, str) for c in req)
            or len(set(req)) != len(req)
            or any(c not in src for c in req)
        ):
            raise InputError(
                f"a non-empty list of distinct class names out of {src}",
                file=self.path,
                field="classes",
                found=repr(req),
            )
        self._classes = req
        cmap = np.full(len(src), -1, dtype=np.int64)
        for i, c in enumerate(req):
            cmap[src.index(c)] = i
        self._class_map = cmap

    def wrap_errors(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ``fn``; turn any non-jetfm exception (I/O library errors) into an InputError."""
        try:
            return fn(*args, **kwargs)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(
                f"a readable {self.description}",
                file=self.path,
                found=f"{type(exc).__name__}: {exc}",
            ) from exc

    def iter_indexed(self) -> Iterator[tuple[np.ndarray, JetBatch]]:
        """Yield ``(rows, batch)``: each batch with the input-file index of each of its jets."""
        self._resolve_classes()
        self.stats = ReadStats()
        chunks = self.wrap_errors(self._raw_chunks)
        while True:
            raw = self.wrap_errors(next, chunks, None)
            if raw is None:
                break
            rows, batch = self._assemble(raw)
            if batch.n_jets:
                yield rows, batch
        self._finish()

    def __iter__(self) -> Iterator[JetBatch]:
        for _, batch in self.iter_indexed():
            yield batch

    def read_all(self) -> JetBatch:
        """The whole file in memory (small files and tests)."""
        return JetBatch.concatenate(list(self))

    def _finish(self) -> None:
        s = self.stats
        if s.n_jets == 0:
            raise InputError(
                "at least one jet with particles"
                + (f" of the classes {self._classes}" if self._requested_classes else ""),
                file=self.path,
                found=f"{s.n_rows} jets: {s.n_empty} empty, {s.n_other_class} of other classes",
            )
        if s.n_empty:
            warnings.warn(
                f"{self.path}: skipped {s.n_empty} of {s.n_rows} jets that have no particles",
                EmptyJetsWarning,
                stacklevel=3,
            )
        if s.n_truncated:
            warnings.warn(
                f"{self.path}: {s.n_truncated} of {s.n_jets} jets had more than "
                f"{self.max_particles} particles; kept the {self.max_particles} highest-pT of each",
                ParticleTruncationWarning,
                stacklevel=3,
            )

    def _assemble(self, raw: RawChunk) -> tuple[np.ndarray, JetBatch]:
        """Filter, sort, truncate and complete one raw chunk; see the module doc for the rules."""
        assert self._class_map is not None
        f = self.path
        n = len(raw.rows)
        counts = np.asarray(raw.counts, dtype=np.int64)
        for k, v in raw.particles.items():  # a reader bug, not bad input: fail loudly
            assert len(v) == counts.sum(), f"particle field {k}: {len(v)} != {counts.sum()}"
        self.stats.n_rows += n
        parts = dict(raw.particles)
        if "pt" not in parts:
            parts["pt"], parts["eta"], parts["phi"] = pxpypz_to_ptetaphi(
                parts["px"], parts["py"], parts["pz"]
            )
        out_label = self._class_map[np.asarray(raw.labels, dtype=np.int64)]
        in_class = out_label >= 0
        nonempty = counts > 0
        keep = in_class & nonempty
        self.stats.n_other_class += int(np.count_nonzero(~in_class))
        self.stats.n_empty += int(np.count_nonzero(in_class & ~nonempty))

        jets = {k: np.asarray(v) for k, v in raw.jets.items()}
        if not keep.all():
            pkeep = keep[np.repeat(np.arange(n), counts)]
            counts = counts[keep]
            parts = {k: np.asarray(v)[pkeep] for k, v in parts.items()}
            jets = {k: v[keep] for k, v in jets.items()}
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])

        missing = [k for k in KINEMATIC_JET_FIELDS if k not in jets]
        if missing:
            p4 = jet_four_momentum(parts["px"], parts["py"], parts["pz"], parts["energy"], offsets)
            for k in missing:
                jets[k] = p4[k]

        order = pt_descending_order(np.asarray(parts["pt"], dtype=np.float64), counts, offsets)
        if order is not None:
            parts = {k: v[order] for k, v in parts.items()}
        if self.max_particles is not None and len(counts) and counts.max() > self.max_particles:
            rank = np.arange(offsets[-1]) - np.repeat(offsets[:-1], counts)
            cut = rank < self.max_particles
            parts = {k: v[cut] for k, v in parts.items()}
            self.stats.n_truncated += int(np.count_nonzero(counts > self.max_particles))
            counts = np.minimum(counts, self.max_particles)
            np.cumsum(counts, out=offsets[1:])

        jets["n_particles"] = counts
        jets["label"] = out_label[keep]
        batch = JetBatch(offsets=offsets, particles=parts, jets=jets).cast().validate(source=str(f))
        self.stats.n_jets += batch.n_jets
        return np.asarray(raw.rows, dtype=np.int64)[keep], batch
