"""Convert a public dataset file into the native store (the library half of ``jetfm convert``).

Split assignment is a pure function of ``(seed, row index in the input)``: a SplitMix64 hash of the
two gives a uniform number u in [0, 1) and the jet goes to train if u < f_train, to val if
u < f_train + f_val, else to test. So the three splits are disjoint by construction, the result does
not depend on ``chunk_size`` / ``shard_size``, and re-running with the same seed reproduces it exactly.
Each shard holds jets of one split only, in input order.

The whole store is built in a temporary folder beside ``output`` and renamed onto it only when the
manifest is written: an error (bad input found half-way, Ctrl-C) leaves no ``output`` behind.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from jetfm.core.atomic import atomic_path
from jetfm.core.errors import InputError
from jetfm.data.readers._base import DEFAULT_CHUNK_SIZE, check_int_option
from jetfm.data.readers._registry import FORMATS, open_reader
from jetfm.data.schema import JetBatch
from jetfm.data.store import SPLITS, finalize_store, write_shard

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (array arithmetic wraps modulo 2^64)."""
    z = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))) & _M64


def assign_splits(
    rows: np.ndarray, seed: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) of each input row, from the seed and the row index."""
    key = _splitmix64(np.array([seed], dtype=np.uint64))[0]
    h = _splitmix64(np.asarray(rows, dtype=np.uint64) ^ key)
    u = (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)  # / 2^53
    c1 = float(fractions[0])
    c2 = c1 + float(fractions[1])
    return (u >= c1).astype(np.int64) + (u >= c2).astype(np.int64)


def sha256_of_input(path: str | PathLike[str]) -> str:
    """sha256 of a file; for a folder, of the sorted (name, sha256) list of its regular files."""
    p = Path(path)

    def file_hash(f: Path) -> str:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        return h.hexdigest()

    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(c for c in p.iterdir() if c.is_file()):
            h.update(f"{f.name}\0{file_hash(f)}\n".encode())
        return h.hexdigest()
    return file_hash(p)


def _check_options(
    format: str | None, fractions: Sequence[float], seed: int, shard_size: int
) -> tuple[float, float, float]:
    if format is not None and format not in FORMATS:
        raise InputError(f"one of {list(FORMATS)} or None", field="format", found=repr(format))
    check_int_option(seed, "seed", minimum=0)
    if seed >= 2**63:
        raise InputError("a seed < 2^63", field="seed", found=seed)
    check_int_option(shard_size, "shard_size", minimum=1)
    try:
        fr = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        fr = ()
    if (
        len(fr) != 3
        or not all(math.isfinite(f) and f >= 0 for f in fr)
        or abs(sum(fr) - 1.0) > 1e-6
    ):
        raise InputError(
            "three non-negative (train, val, test) fractions summing to 1",
            field="fractions",
            found=repr(fractions),
        )
    return fr[0], fr[1], fr[2]


def convert(
    input: str | PathLike[str],
    output: str | PathLike[str],
    *,
    format: str | None = None,
    max_particles: int | None = None,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    shard_size: int = 10000,
    classes: list[str] | None = None,
    progress: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overwrite: bool = False,
) -> Path:
    """Convert ``input`` (a file or part_npy folder) into a native store folder at ``output``.

    ``format``: a registry name (see ``jetfm.data.readers.FORMATS``) or None to detect it.
    ``max_particles``: keep at most this many highest-pT particles per jet (warns once with the
    number of jets cut). ``classes``: keep only these of the format's classes, labels re-indexed in
    the given order (for ``part_npy``, names for labels 0, 1, ...). ``overwrite``: replace an
    existing ``output`` (otherwise it must not exist, or be an empty folder).
    Returns the output path; its manifest's ``source`` records format, input name, input sha256,
    options and the reader's counts (jets read, skipped empty, truncated).
    """
    fr = _check_options(format, fractions, seed, shard_size)
    src = Path(input)
    out = Path(output)
    if out.exists():
        if not out.is_dir():
            raise InputError("a folder path for the store", file=out, found="an existing file")
        if any(out.iterdir()) and not overwrite:
            raise InputError(
                "an output folder that does not exist yet or is empty (or overwrite=True)",
                file=out,
                found="a non-empty folder",
            )
    reader = open_reader(
        src, format, max_particles=max_particles, chunk_size=chunk_size, classes=classes
    )
    out_classes = reader.classes
    n_total = reader.n_rows()

    from tqdm.auto import tqdm

    with atomic_path(out) as tmp:
        buffers: dict[str, list[JetBatch]] = {s: [] for s in SPLITS}
        n_shards = dict.fromkeys(SPLITS, 0)

        def flush(split: str, final: bool) -> None:
            while buffers[split]:
                n_buf = sum(b.n_jets for b in buffers[split])
                if n_buf < shard_size and not final:
                    return
                joined = JetBatch.concatenate(buffers[split])
                take = min(shard_size, joined.n_jets)
                shard = joined.select(np.arange(take)) if take < joined.n_jets else joined
                rest = (
                    joined.select(np.arange(take, joined.n_jets)) if take < joined.n_jets else None
                )
                write_shard(
                    tmp,
                    f"{split}-{n_shards[split]:05d}",
                    shard,
                    split=split,
                    attrs={"format": reader.format, "input": src.name},
                )
                n_shards[split] += 1
                buffers[split] = [rest] if rest is not None else []

        with tqdm(
            total=n_total, unit="jet", desc=f"convert {src.name}", disable=not progress
        ) as bar:
            for rows, batch in reader.iter_indexed():
                split_of = assign_splits(rows, seed, fr)
                for i, split in enumerate(SPLITS):
                    idx = np.flatnonzero(split_of == i)
                    if len(idx):
                        buffers[split].append(batch.select(idx))
                        flush(split, final=False)
                bar.update(reader.stats.n_rows - bar.n)
            bar.update(reader.stats.n_rows - bar.n)
        for split in SPLITS:
            flush(split, final=True)

        source: dict[str, Any] = {
            "kind": "converted",
            "format": reader.format,
            "description": reader.description,
            "input": src.name,
            "input_sha256": sha256_of_input(src),
            "file_classes": list(reader.source_classes()),
            "options": {
                "max_particles": max_particles,
                "fractions": list(fr),
                "seed": seed,
                "shard_size": shard_size,
                "classes": None if classes is None else list(classes),
            },
            "split_rule": "SplitMix64(seed, input row) uniform in [0,1) vs cumulative fractions",
            "stats": reader.stats.to_dict(),
        }
        finalize_store(tmp, classes=out_classes, source=source)
    return out
