"""Builders of tiny input files in the exact published schemas of the formats jetfm reads.

Each builder writes a handful of hand-made jets whose numbers are simple enough to check by hand in
tests/data/test_readers.py (pT of 3-4-5 triangles, masses from integer four-vectors). Keyword
arguments let a test drop or replace one field to produce the bad inputs the readers must reject.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jetfm.data.schema import JETCLASS_CLASSES

# ---------------------------------------------------------------------------------------------
# JetClass ROOT
# particle: px, py, pz, E, flag (0 ch. hadron, 1 neutral hadron, 2 photon, 3 electron, 4 muon),
#           charge, d0, dz
JETCLASS_JETS: list[dict[str, Any]] = [
    {
        "label": "Tbqq",
        "parts": [
            (3.0, 4.0, 0.0, 5.0, 0, 1.0, 0.1, 0.2),
            (30.0, 40.0, 0.0, 50.0, 2, 0.0, 0.0, 0.0),
            (-6.0, 8.0, 0.0, 10.0, 3, -1.0, -0.05, 0.3),
        ],
        "tau": (0.5, 0.25, 0.1),
    },
    {
        "label": "QCD",
        "parts": [(1.0, 0.0, 0.0, 1.0, 4, 1.0, 0.0, 0.0), (0.0, 2.0, 0.0, 2.0, 1, 0.0, 0.0, 0.0)],
        "tau": (0.4, 0.0, 0.0),
    },
    {"label": "QCD", "parts": [], "tau": (0.0, 0.0, 0.0)},
]
FLAG_NAMES = ("isChargedHadron", "isNeutralHadron", "isPhoton", "isElectron", "isMuon")


def jetclass_arrays(jets: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The branches of a JetClass tree for ``jets`` (awkward record ``part`` + flat jet branches)."""
    import awkward as ak

    jets = JETCLASS_JETS if jets is None else jets
    cols = {
        k: []
        for k in (
            "px",
            "py",
            "pz",
            "energy",
            "charge",
            "d0val",
            "dzval",
            "deta",
            "dphi",
            "d0err",
            "dzerr",
            *FLAG_NAMES,
        )
    }
    for j in jets:
        p = np.array(j["parts"], dtype=np.float64).reshape(-1, 8)
        for i, k in enumerate(("px", "py", "pz", "energy")):
            cols[k].append(p[:, i])
        cols["charge"].append(p[:, 5])
        cols["d0val"].append(p[:, 6])
        cols["dzval"].append(p[:, 7])
        for k in ("deta", "dphi", "d0err", "dzerr"):
            cols[k].append(np.zeros(len(p)))
        for f, name in enumerate(FLAG_NAMES):
            cols[name].append((p[:, 4] == f).astype(np.float32))
    part = ak.zip(
        {k: ak.values_astype(ak.Array([list(x) for x in v]), "float32") for k, v in cols.items()}
    )
    out: dict[str, Any] = {"part": part}
    for c in JETCLASS_CLASSES:
        out[f"label_{c}"] = np.array([j["label"] == c for j in jets])
    sums = np.array([np.array(j["parts"]).reshape(-1, 8)[:, :4].sum(axis=0) for j in jets])
    pt = np.hypot(sums[:, 0], sums[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(pt > 0, np.arcsinh(sums[:, 2] / np.where(pt > 0, pt, 1)), 0.0)
    out["jet_pt"] = pt.astype(np.float32)
    out["jet_eta"] = eta.astype(np.float32)
    out["jet_phi"] = np.arctan2(sums[:, 1], sums[:, 0]).astype(np.float32)
    out["jet_energy"] = sums[:, 3].astype(np.float32)
    out["jet_nparticles"] = np.array([len(j["parts"]) for j in jets], dtype=np.float32)
    out["jet_sdmass"] = np.zeros(len(jets), dtype=np.float32)
    for i in range(4):
        out[f"jet_tau{i + 1}"] = np.array([(*j["tau"], 0.0)[i] for j in jets], dtype=np.float32)
    return out


def write_jetclass_root(
    path: Path,
    jets: list[dict[str, Any]] | None = None,
    *,
    drop: tuple[str, ...] = (),
    replace: dict[str, Any] | None = None,
) -> Path:
    """A JetClass-schema ROOT file (TTree ``tree``). ``drop`` / ``replace`` take branch names."""
    import awkward as ak
    import uproot

    arrays = jetclass_arrays(jets)
    flat: dict[str, Any] = {}
    part = arrays.pop("part")
    for k in part.fields:
        flat[f"part_{k}"] = part[k]
    flat.update(arrays)
    for b in drop:
        del flat[b]
    flat.update(replace or {})
    # keep the jagged branches as one record so they share a counter, like JetClass files
    jagged = {k[5:]: v for k, v in flat.items() if k.startswith("part_") and v.ndim == 2}
    data: dict[str, Any] = {"part": ak.zip(jagged)} if jagged else {}
    data.update({k: v for k, v in flat.items() if not (k.startswith("part_") and v.ndim == 2)})
    types = {
        k: (v.type if isinstance(v, ak.Array) else np.asarray(v).dtype) for k, v in data.items()
    }
    with uproot.recreate(path) as f:
        f.mktree("tree", types)
        f["tree"].extend(data)
    return path


# ---------------------------------------------------------------------------------------------
# Top Tagging reference HDF5: (E, px, py, pz) per slot, zero padded, is_signal_new
TOP_JETS: list[dict[str, Any]] = [
    {"signal": 1, "parts": [(5.0, 3.0, 4.0, 0.0), (13.0, 5.0, 12.0, 0.0), (2.0, 0.0, 1.2, 1.6)]},
    {"signal": 0, "parts": [(10.0, 6.0, 8.0, 0.0)]},
    {"signal": 0, "parts": [(25.0, 7.0, 24.0, 0.0), (1.0, 1.0, 0.0, 0.0)]},
]


def write_toptagging_h5(
    path: Path,
    jets: list[dict[str, Any]] | None = None,
    *,
    n_slots: int = 4,
    fmt: str = "table",
    drop: tuple[str, ...] = (),
    replace: dict[str, Any] | None = None,
    key: str = "table",
) -> Path:
    """A Top-Tagging-schema pandas HDF5 file (``to_hdf``, layout ``fmt``: 'table' or 'fixed')."""
    import pandas as pd

    jets = TOP_JETS if jets is None else jets
    data: dict[str, np.ndarray] = {}
    for i in range(n_slots):
        for c, name in enumerate(("E", "PX", "PY", "PZ")):
            data[f"{name}_{i}"] = np.array(
                [j["parts"][i][c] if i < len(j["parts"]) else 0.0 for j in jets], dtype=np.float32
            )
    for name in ("truthE", "truthPX", "truthPY", "truthPZ"):
        data[name] = np.zeros(len(jets), dtype=np.float32)
    data["ttv"] = np.zeros(len(jets), dtype=np.int64)
    data["is_signal_new"] = np.array([j["signal"] for j in jets], dtype=np.int64)
    df = pd.DataFrame(data)
    df = df.drop(columns=list(drop))
    for k, v in (replace or {}).items():
        df[k] = v
    df.to_hdf(path, key=key, format=fmt, mode="w")
    return path


# ---------------------------------------------------------------------------------------------
# JetNet HDF5: particle_features (N, P, 4) eta_rel, phi_rel, pt_rel, mask; jet_features
JETNET_PARTICLES = np.array(
    [
        [[0.1, -0.2, 0.25, 1.0], [0.0, 0.05, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0]],
        [[-0.3, 0.1, 0.9, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
    ],
    dtype=np.float32,
)
# pt, eta, mass, num_particles (the published per-type files)
JETNET_JETS = np.array([[1000.0, 0.5, 80.0, 2.0], [800.0, -1.0, 20.0, 45.0]], dtype=np.float32)


def write_jetnet_h5(
    path: Path,
    particles: np.ndarray | None = None,
    jets: np.ndarray | None = None,
    *,
    type_column: np.ndarray | None = None,
    drop: tuple[str, ...] = (),
) -> Path:
    """A JetNet-schema HDF5 file; with ``type_column`` the jet features get the type first."""
    import h5py

    pf = JETNET_PARTICLES if particles is None else particles
    jf = JETNET_JETS if jets is None else jets
    if type_column is not None:
        jf = np.concatenate([np.asarray(type_column, dtype=jf.dtype)[:, None], jf], axis=1)
    with h5py.File(path, "w") as f:
        if "particle_features" not in drop:
            f.create_dataset("particle_features", data=pf)
        if "jet_features" not in drop:
            f.create_dataset("jet_features", data=jf)
    return path


# ---------------------------------------------------------------------------------------------
# EnergyFlow quark/gluon NPZ: X (N, M, 4) = pt, y, phi, pid; y labels (1 = quark)
QG_X = np.array(
    [
        [[10.0, 0.5, 4.0, 211.0], [30.0, 0.0, 1.0, 22.0], [0.0, 0.0, 0.0, 0.0]],
        [[5.0, -0.2, 0.5, -11.0], [20.0, 0.1, 0.4, 2112.0], [1.0, 0.3, 0.6, -211.0]],
        [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
    ]
)
QG_Y = np.array([1.0, 0.0, 0.0])


def write_qg_npz(
    path: Path, x: np.ndarray | None = None, y: np.ndarray | None = None, *, compressed: bool = True
) -> Path:
    """A quark/gluon NPZ file like EnergyFlow's ``QG_jets*.npz`` (arrays ``X`` and ``y``)."""
    x = QG_X if x is None else x
    y = QG_Y if y is None else y
    with open(path, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, X=x, y=y)
    return path


# ---------------------------------------------------------------------------------------------
# ParT-style .npy folder: pf_vectors (N, 4, P) px, py, pz, E; pf_points; pf_mask; labels
def write_part_npy(
    folder: Path,
    vectors: np.ndarray,
    mask: np.ndarray,
    labels: np.ndarray,
    *,
    drop: tuple[str, ...] = (),
) -> Path:
    """A ParT-style folder; ``vectors`` (N, 4, P), ``mask`` (N, P), ``labels`` (N,)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "pf_vectors": np.asarray(vectors, dtype=np.float32),
        "pf_points": np.zeros((len(vectors), 2, vectors.shape[2]), dtype=np.float32),
        "pf_mask": np.asarray(mask, dtype=np.float32)[:, None, :],
        "labels": np.asarray(labels),
    }
    for name, arr in arrays.items():
        if name not in drop:
            np.save(folder / f"{name}.npy", arr)
    return folder
