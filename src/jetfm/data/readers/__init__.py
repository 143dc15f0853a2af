"""Readers of the public jet datasets, and their conversion into the native store.

Every reader streams its input in chunks of ``chunk_size`` jets and yields validated
:class:`~jetfm.data.schema.JetBatch` objects (particles pT-descending within each jet; fields a format
lacks are absent). Formats, by registry name:

===============  ==========================================================================
jetclass_root    JetClass ROOT file (uproot), 10 classes QCD ... Tbl
toptagging_h5    Top Tagging reference pandas HDF5 (key ``table``), classes QCD / Tbqq
jetnet_h5        JetNet HDF5 (particle_features, jet_features), classes g, q, t, w, z
qg_npz           EnergyFlow quark/gluon NPZ (X, y), classes gluon / quark
part_npy         ParT-style folder of .npy arrays (pf_vectors, pf_mask, labels)
===============  ==========================================================================

``detect_format(path)`` recognises each of them from content (magic bytes, HDF5 keys, file names in a
folder), never from the file extension alone.
"""

from jetfm.data.readers._base import (
    DEFAULT_CHUNK_SIZE,
    EmptyJetsWarning,
    ParticleTruncationWarning,
    RawChunk,
    Reader,
    ReadStats,
)
from jetfm.data.readers._registry import FORMATS, READERS, detect_format, open_reader
from jetfm.data.readers.convert import convert
from jetfm.data.readers.jetclass_root import JetClassRootReader
from jetfm.data.readers.jetnet_h5 import JetNetH5Reader
from jetfm.data.readers.part_npy import PartNpyReader
from jetfm.data.readers.qg_npz import QGNpzReader
from jetfm.data.readers.toptagging_h5 import TopTaggingH5Reader

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "FORMATS",
    "READERS",
    "EmptyJetsWarning",
    "JetClassRootReader",
    "JetNetH5Reader",
    "PartNpyReader",
    "ParticleTruncationWarning",
    "QGNpzReader",
    "RawChunk",
    "ReadStats",
    "Reader",
    "TopTaggingH5Reader",
    "convert",
    "detect_format",
    "open_reader",
]
