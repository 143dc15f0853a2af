"""The format registry and content-based format detection (re-exported by the package)."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

from jetfm.core.errors import InputError
from jetfm.data.readers._base import DEFAULT_CHUNK_SIZE, Reader
from jetfm.data.readers.jetclass_root import JetClassRootReader
from jetfm.data.readers.jetnet_h5 import JetNetH5Reader
from jetfm.data.readers.part_npy import PartNpyReader
from jetfm.data.readers.qg_npz import QGNpzReader
from jetfm.data.readers.toptagging_h5 import TopTaggingH5Reader

READERS: dict[str, type[Reader]] = {
    r.format: r
    for r in (
        JetClassRootReader,
        TopTaggingH5Reader,
        JetNetH5Reader,
        QGNpzReader,
        PartNpyReader,
    )
}
FORMATS: tuple[str, ...] = tuple(READERS)

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _is_hdf5(path: Path) -> bool:
    # The superblock may sit at 0, 512, 1024, ... (after a user block); pandas/h5py files use 0.
    with open(path, "rb") as fh:
        for off in (0, 512, 1024, 2048):
            fh.seek(off)
            if fh.read(8) == _HDF5_MAGIC:
                return True
    return False


def detect_format(path: str | PathLike[str]) -> str:
    """The registry name of the format of ``path``; InputError if it is none of them."""
    p = Path(path)
    if not p.exists():
        raise InputError(
            f"an existing input file or folder ({', '.join(FORMATS)})", file=p, found="no such path"
        )
    if p.is_dir():
        if (p / "pf_vectors.npy").is_file():
            return PartNpyReader.format
        raise InputError(
            "a folder with pf_vectors.npy (part_npy); other formats are single files",
            file=p,
            found=f"files {sorted(c.name for c in p.iterdir())[:10]}",
        )
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
        if head[:4] == b"root":
            return JetClassRootReader.format
        if head[:4] == b"PK\x03\x04":
            return QGNpzReader.format
        if _is_hdf5(p):
            import h5py

            with h5py.File(p, "r") as f:
                keys = set(f.keys())
            if "particle_features" in keys:
                return JetNetH5Reader.format
            if "table" in keys:
                return TopTaggingH5Reader.format
            raise InputError(
                "an HDF5 file with 'particle_features' (JetNet) or 'table' (Top Tagging)",
                file=p,
                field="keys",
                found=sorted(keys),
            )
    except InputError:
        raise
    except Exception as exc:  # unreadable / truncated headers
        raise InputError(
            f"a readable file in one of the formats {list(FORMATS)}",
            file=p,
            found=f"{type(exc).__name__}: {exc}",
        ) from exc
    raise InputError(
        f"a file in one of the formats {list(FORMATS)} (ROOT, NPZ or HDF5 content)",
        file=p,
        found=f"unrecognised header {head!r}",
    )


def open_reader(
    path: str | PathLike[str],
    format: str | None = None,
    *,
    max_particles: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    classes: list[str] | None = None,
) -> Reader:
    """A reader for ``path`` (format auto-detected when ``format`` is None)."""
    if format is None:
        format = detect_format(path)
    if format not in READERS:
        raise InputError(f"one of {list(FORMATS)}", file=path, field="format", found=repr(format))
    reader = READERS[format](
        path, max_particles=max_particles, chunk_size=chunk_size, classes=classes
    )
    reader.classes  # noqa: B018 -- resolve (and so check) ``classes`` before any reading
    return reader
