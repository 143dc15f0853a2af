"""Top Quark Tagging reference dataset (Kasieczka, Plehn et al. 2019; arXiv 1902.09914), pandas HDF5.

One pandas DataFrame under key ``table`` (either pandas storage layout, "fixed" or "table"), one row
per jet: ``E_i, PX_i, PY_i, PZ_i`` for constituent slots i = 0..M-1 (M = 200 in the published files,
any M is accepted as long as all four columns exist for every slot), ``truthE/PX/PY/PZ`` (the top
quark's four-momentum, zero for QCD; not a jet property, not read), ``ttv`` (the original
train/test/val flag, not read: the store makes its own split) and ``is_signal_new`` (1 = top).

A slot whose four values are all zero is padding. Jet kinematics are the E-scheme sum of the
constituents. Classes: ``["QCD", "Tbqq"]`` (JetClass names) for ``is_signal_new`` 0 / 1.
Rows are read ``chunk_size`` at a time with ``HDFStore.select(start=, stop=)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from jetfm.core.errors import InputError
from jetfm.data.readers._base import RawChunk, Reader, as_labels, as_numeric, check_finite

KEY = "table"
LABEL_COLUMN = "is_signal_new"
_COMPONENTS = ("E", "PX", "PY", "PZ")
_SLOT = re.compile(r"^E_(\d+)$")


class TopTaggingH5Reader(Reader):
    """Streams a Top Tagging reference HDF5 file row range by row range."""

    format: ClassVar[str] = "toptagging_h5"
    description: ClassVar[str] = "Top Tagging reference HDF5 file (pandas key 'table')"
    format_classes: ClassVar[tuple[str, ...]] = ("QCD", "Tbqq")

    def _open(self) -> Any:
        import pandas as pd

        store = pd.HDFStore(self.path, mode="r")
        if f"/{KEY}" not in store.keys():
            keys = store.keys()
            store.close()
            raise InputError(
                f"a pandas object under key '{KEY}'", file=self.path, field=KEY, found=keys
            )
        return store

    @staticmethod
    def _nrows(store: Any) -> int:
        storer = store.get_storer(KEY)
        n = getattr(storer, "nrows", None)
        if n is None:  # "fixed" layout
            n = storer.shape[0]
        return int(n)

    def n_rows(self) -> int:
        def count() -> int:
            with self._open() as store:
                return self._nrows(store)

        return int(self.wrap_errors(count))

    def _slots(self, columns: list[str]) -> list[int]:
        slots = sorted(int(m.group(1)) for c in columns if (m := _SLOT.match(str(c))))
        if not slots:
            raise InputError(
                "constituent columns E_0, PX_0, PY_0, PZ_0, ...", file=self.path, field="E_0"
            )
        cols = set(map(str, columns))
        for i in range(slots[-1] + 1):
            for comp in _COMPONENTS:
                if f"{comp}_{i}" not in cols:
                    raise InputError(
                        "a constituent column for every slot",
                        file=self.path,
                        field=f"{comp}_{i}",
                        found="missing",
                    )
        if LABEL_COLUMN not in cols:
            raise InputError(
                "the label column (1 = top)", file=self.path, field=LABEL_COLUMN, found="missing"
            )
        return list(range(slots[-1] + 1))

    def _raw_chunks(self) -> Iterator[RawChunk]:
        with self._open() as store:
            n_total = self._nrows(store)
            slots: list[int] | None = None
            for start in range(0, n_total, self.chunk_size):
                stop = min(start + self.chunk_size, n_total)
                df = store.select(KEY, start=start, stop=stop)
                if slots is None:
                    slots = self._slots(list(df.columns))
                yield self._chunk(df, slots, start, stop)

    def _chunk(self, df: Any, slots: list[int], start: int, stop: int) -> RawChunk:
        path = self.path
        comp: dict[str, np.ndarray] = {}
        for c in _COMPONENTS:
            names = [f"{c}_{i}" for i in slots]
            for name in names:
                if df[name].dtype.kind not in "biuf":
                    raise InputError(
                        "a numeric column", file=path, field=name, found=df[name].dtype
                    )
            arr = as_numeric(df[names].to_numpy(), file=path, field=f"{c}_*")
            comp[c] = check_finite(arr, file=path, field=f"{c}_*")
        labels = as_labels(df[LABEL_COLUMN].to_numpy(), 2, file=path, field=LABEL_COLUMN)
        mask = (comp["E"] != 0) | (comp["PX"] != 0) | (comp["PY"] != 0) | (comp["PZ"] != 0)
        counts = mask.sum(axis=1).astype(np.int64)
        particles = {
            "energy": comp["E"][mask],
            "px": comp["PX"][mask],
            "py": comp["PY"][mask],
            "pz": comp["PZ"][mask],
        }
        return RawChunk(
            rows=np.arange(start, stop, dtype=np.int64),
            counts=counts,
            particles=particles,
            labels=labels,
        )
