"""Readers of the public jet formats and ``convert`` into the native store.

Tiny files in each published schema (built by readers_fixtures.py) go through the readers and
``convert``; the values that come out are checked against numbers worked out by hand in the comments.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from jetfm.core.errors import InputError
from jetfm.data.readers import (
    EmptyJetsWarning,
    ParticleTruncationWarning,
    convert,
    detect_format,
    open_reader,
)
from jetfm.data.readers.convert import assign_splits, sha256_of_input
from jetfm.data.schema import JETCLASS_CLASSES, JetBatch
from jetfm.data.store import Store

try:  # tests/ may or may not be a package
    from .readers_fixtures import (
        QG_X,
        write_jetclass_root,
        write_jetnet_h5,
        write_part_npy,
        write_qg_npz,
        write_toptagging_h5,
    )
except ImportError:
    from readers_fixtures import (  # type: ignore[no-redef]
        QG_X,
        write_jetclass_root,
        write_jetnet_h5,
        write_part_npy,
        write_qg_npz,
        write_toptagging_h5,
    )

REAL_QG = Path(__file__).parents[2].parent / "shared/data/qg_real_sample"
ALL_TRAIN = (1.0, 0.0, 0.0)


def _convert(src: Path, out: Path, **kw: object) -> Store:
    kw.setdefault("fractions", ALL_TRAIN)
    kw.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyJetsWarning)
        convert(src, out, **kw)  # type: ignore[arg-type]
    return Store(out)


def _jet(batch: JetBatch, i: int) -> dict[str, np.ndarray]:
    s, e = batch.offsets[i], batch.offsets[i + 1]
    return {k: v[s:e] for k, v in batch.particles.items()}


def _small_part_npy(folder: Path, n: int = 40) -> Path:
    """n jets; jet i has 1 + i % 5 massless particles along x with pT 10*(i+1), 1, 2, ... GeV."""
    p = 6
    vec = np.zeros((n, 4, p), dtype=np.float32)
    mask = np.zeros((n, p), dtype=np.float32)
    for i in range(n):
        k = 1 + i % 5
        pts = np.array([10.0 * (i + 1), *range(1, k)], dtype=np.float32)
        vec[i, 0, :k] = pts  # px
        vec[i, 3, :k] = pts  # E (massless, along x)
        mask[i, :k] = 1
    return write_part_npy(folder, vec, mask, np.arange(n) % 2)


# --------------------------------------------------------------------------------------------
# JetClass ROOT
def test_jetclass_root_roundtrip(tmp_path: Path) -> None:
    src = write_jetclass_root(tmp_path / "HToBB_000.root")
    assert detect_format(src) == "jetclass_root"
    with pytest.warns(EmptyJetsWarning, match="skipped 1 of 3"):
        convert(src, tmp_path / "store", fractions=ALL_TRAIN, progress=False)
    store = Store(tmp_path / "store")
    assert store.classes == list(JETCLASS_CLASSES)
    b = store.read("train")
    assert b.n_jets == 2  # the empty third jet is skipped
    np.testing.assert_array_equal(b.jets["label"], [JETCLASS_CLASSES.index("Tbqq"), 0])
    j0 = _jet(b, 0)
    # sorted by pT: photon (30, 40) -> 50, electron (-6, 8) -> 10, charged hadron (3, 4) -> 5
    np.testing.assert_allclose(j0["pt"], [50.0, 10.0, 5.0])
    np.testing.assert_array_equal(j0["pid"], [22, 11, 211])  # e- (charge -1) is +11
    np.testing.assert_array_equal(j0["charge"], [0, -1, 1])
    np.testing.assert_allclose(j0["d0"], [0.0, -0.05, 0.1], rtol=1e-6)
    np.testing.assert_allclose(j0["dz"], [0.0, 0.3, 0.2], rtol=1e-6)
    # jet: sum p = (27, 52, 0, 65): m^2 = 65^2 - 27^2 - 52^2 = 792
    assert b.jets["mass"][0] == pytest.approx(math.sqrt(792.0), rel=1e-6)
    assert b.jets["pt"][0] == pytest.approx(math.hypot(27.0, 52.0), rel=1e-6)
    assert b.jets["energy"][0] == pytest.approx(65.0)
    assert b.jets["tau21"][0] == pytest.approx(0.5) and b.jets["tau32"][0] == pytest.approx(0.4)
    assert b.jets["tau32"][1] == 0.0  # tau2 = 0: ratio defined as 0
    j1 = _jet(b, 1)  # neutral hadron pT 2 then mu+ (charge +1 -> pid -13) pT 1
    np.testing.assert_array_equal(j1["pid"], [130, -13])
    src_info = store.manifest["source"]
    assert src_info["format"] == "jetclass_root" and src_info["input"] == src.name
    assert src_info["input_sha256"] == sha256_of_input(src)
    assert src_info["stats"]["n_empty"] == 1 and src_info["stats"]["n_rows"] == 3


def test_jetclass_root_class_subset(tmp_path: Path) -> None:
    src = write_jetclass_root(tmp_path / "in.root")
    store = _convert(src, tmp_path / "s", classes=["Tbqq"])
    b = store.read()
    assert store.classes == ["Tbqq"] and b.n_jets == 1
    np.testing.assert_array_equal(b.jets["label"], [0])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"drop": ("part_isMuon",)}, "part_isMuon"),
        ({"drop": ("label_Hbb",)}, "label_Hbb"),
        ({"replace": {"jet_pt": np.array([1.0, np.nan, 2.0], dtype=np.float32)}}, "jet_pt"),
        ({"replace": {"label_QCD": np.array([1.0, 1.0, 0.0], dtype=np.float32)}}, "label_*"),
        ({"replace": {"part_px": np.array([1.0, 2.0, 3.0], dtype=np.float32)}}, "part_px"),
        (
            {"replace": {"jet_nparticles": np.array([3.0, 1.0, 0.0], dtype=np.float32)}},
            "jet_nparticles",
        ),
    ],
    ids=["missing-flag", "missing-label", "nan", "not-one-hot", "not-jagged", "bad-count"],
)
def test_jetclass_root_bad_input(tmp_path: Path, kwargs: dict, field: str) -> None:
    src = write_jetclass_root(tmp_path / "bad.root", **kwargs)
    with pytest.raises(InputError) as err:
        _convert(src, tmp_path / "store")
    assert err.value.field == field and err.value.file is not None and "bad.root" in str(err.value)
    assert not (tmp_path / "store").exists()


def test_jetclass_root_all_empty_is_an_error(tmp_path: Path) -> None:
    jets = [{"label": "QCD", "parts": [(1.0, 0.0, 0.0, 1.0, 2, 0.0, 0.0, 0.0)], "tau": (0, 0, 0)}]
    jets += [{"label": "QCD", "parts": [], "tau": (0, 0, 0)}] * 2
    src = write_jetclass_root(tmp_path / "e.root", jets)
    with pytest.raises(InputError, match="at least one jet with particles"):
        _convert(src, tmp_path / "store", classes=["Hbb"])  # the one non-empty jet is QCD
    assert not (tmp_path / "store").exists()


# --------------------------------------------------------------------------------------------
# Top Tagging HDF5
@pytest.mark.parametrize("fmt", ["table", "fixed"])
def test_toptagging_roundtrip(tmp_path: Path, fmt: str) -> None:
    src = write_toptagging_h5(tmp_path / "train.h5", fmt=fmt)
    assert detect_format(src) == "toptagging_h5"
    store = _convert(src, tmp_path / "s", chunk_size=2)  # chunks straddle the jets
    b = store.read()
    assert store.classes == ["QCD", "Tbqq"] and b.n_jets == 3
    np.testing.assert_array_equal(b.jets["label"], [1, 0, 0])
    np.testing.assert_array_equal(b.counts(), [3, 1, 2])  # zero-padded slots are absent
    # jet 0: (E, px, py, pz) = (5,3,4,0) + (13,5,12,0) + (2,0,1.2,1.6) = (20, 8, 17.2, 1.6)
    np.testing.assert_allclose(_jet(b, 0)["pt"], [13.0, 5.0, 1.2], rtol=1e-6)
    m2 = 20.0**2 - 8.0**2 - 17.2**2 - 1.6**2
    assert b.jets["mass"][0] == pytest.approx(math.sqrt(m2), rel=1e-5)
    assert b.jets["pt"][0] == pytest.approx(math.hypot(8.0, 17.2), rel=1e-6)
    # jet 2: (25, 7, 24, 0) + (1, 1, 0, 0) = (26, 8, 24, 0): m^2 = 676 - 64 - 576 = 36
    assert b.jets["mass"][2] == pytest.approx(6.0, rel=1e-5)
    assert "pid" not in b.particles and "charge" not in b.particles


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"drop": ("PZ_2",)}, "PZ_2"),
        ({"drop": ("is_signal_new",)}, "is_signal_new"),
        ({"replace": {"E_1": ["a", "b", "c"]}}, "E_1"),
        ({"replace": {"PX_0": [np.inf, 6.0, 7.0]}}, "PX_*"),
        ({"replace": {"is_signal_new": [2, 0, 0]}}, "is_signal_new"),
        ({"key": "jets"}, "table"),
    ],
    ids=["missing-column", "missing-label", "strings", "inf", "label-range", "wrong-key"],
)
def test_toptagging_bad_input(tmp_path: Path, kwargs: dict, field: str) -> None:
    src = write_toptagging_h5(tmp_path / "bad.h5", **kwargs)
    with pytest.raises(InputError) as err:
        _convert(src, tmp_path / "s", format="toptagging_h5")
    assert err.value.field == field and "bad.h5" in str(err.value)
    assert not (tmp_path / "s").exists()


# --------------------------------------------------------------------------------------------
# JetNet HDF5
def test_jetnet_roundtrip_type_from_file_name(tmp_path: Path) -> None:
    src = write_jetnet_h5(tmp_path / "t150.hdf5")  # published layout: pt, eta, mass, n
    assert detect_format(src) == "jetnet_h5"
    b = _convert(src, tmp_path / "s").read()
    np.testing.assert_array_equal(b.jets["label"], [2, 2])  # t in (g, q, t, w, z)
    p0 = _jet(b, 0)
    # jet pT 1000, eta 0.5, phi 0: particles pt_rel 0.5, 0.25 -> 500, 250 (sorted)
    np.testing.assert_allclose(p0["pt"], [500.0, 250.0])
    np.testing.assert_allclose(p0["eta"], [0.5, 0.6], rtol=1e-6)
    np.testing.assert_allclose(p0["phi"], [0.05, -0.2], rtol=1e-6)
    np.testing.assert_allclose(
        p0["energy"], [500 * math.cosh(0.5), 250 * math.cosh(0.6)], rtol=1e-6
    )
    np.testing.assert_array_equal(b.jets["phi"], [0.0, 0.0])
    np.testing.assert_allclose(b.jets["mass"], [80.0, 20.0])
    e0 = math.sqrt((1000 * math.cosh(0.5)) ** 2 + 80.0**2)
    assert b.jets["energy"][0] == pytest.approx(e0, rel=1e-6)
    np.testing.assert_array_equal(b.counts(), [2, 1])  # n = 45 in the file is not the stored count
    assert "pid" not in b.particles


def test_jetnet_type_column_and_errors(tmp_path: Path) -> None:
    src = write_jetnet_h5(tmp_path / "mixed.h5", type_column=np.array([3, 0]))
    b = _convert(src, tmp_path / "s").read()
    np.testing.assert_array_equal(b.jets["label"], [3, 0])  # w, g
    with pytest.raises(InputError, match="named after its jet type"):
        _convert(write_jetnet_h5(tmp_path / "jets.h5"), tmp_path / "s2")
    with pytest.raises(InputError) as err:
        _convert(
            write_jetnet_h5(tmp_path / "g.h5", drop=("jet_features",)),
            tmp_path / "s3",
            format="jetnet_h5",
        )
    assert err.value.field == "jet_features"
    bad = np.array(np.zeros((2, 3, 4)), dtype="S4")
    with pytest.raises(InputError, match="numeric"):
        _convert(write_jetnet_h5(tmp_path / "q.h5", particles=bad), tmp_path / "s4")


# --------------------------------------------------------------------------------------------
# Quark/gluon NPZ
def test_qg_npz_roundtrip_and_truncation(tmp_path: Path) -> None:
    src = write_qg_npz(tmp_path / "QG_jets.npz")
    assert detect_format(src) == "qg_npz"
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        convert(
            src, tmp_path / "s", fractions=ALL_TRAIN, max_particles=2, progress=False, chunk_size=1
        )
    trunc = [w for w in rec if issubclass(w.category, ParticleTruncationWarning)]
    assert len(trunc) == 1 and "1 of 2 jets" in str(trunc[0].message)  # once, with the count
    store = Store(tmp_path / "s")
    b = store.read()
    assert store.classes == ["gluon", "quark"] and b.n_jets == 2  # third jet is all padding
    np.testing.assert_array_equal(b.jets["label"], [1, 0])
    q = _jet(b, 0)
    np.testing.assert_array_equal(q["pid"], [22, 211])
    np.testing.assert_array_equal(q["charge"], [0, 1])
    # pi+: pT 10, y 0.5, phi 4.0 -> wrapped to 4 - 2 pi; E = sqrt(100 + m_pi^2) cosh 0.5
    assert q["phi"][1] == pytest.approx(4.0 - 2 * math.pi, rel=1e-6)
    assert q["energy"][1] == pytest.approx(math.sqrt(100 + 0.13957**2) * math.cosh(0.5), rel=1e-6)
    g = _jet(b, 1)  # gluon jet: 3 particles cut to the 2 hardest (n 20, e+ 5; pi- 1 dropped)
    np.testing.assert_array_equal(g["pid"], [2112, -11])
    np.testing.assert_array_equal(g["charge"], [0, 1])
    assert store.manifest["source"]["stats"]["n_truncated"] == 1
    # jet mass of the (uncut) gluon jet from all three particles, computed here independently
    pt, y, phi, _pid = QG_X[1].T
    m = np.array([0.000511, 0.939565, 0.13957])  # e+, n, pi-
    mt = np.sqrt(pt**2 + m**2)
    p4 = np.array(
        [
            (mt * np.cosh(y)).sum(),
            (pt * np.cos(phi)).sum(),
            (pt * np.sin(phi)).sum(),
            (mt * np.sinh(y)).sum(),
        ]
    )
    mass = math.sqrt(p4[0] ** 2 - p4[1] ** 2 - p4[2] ** 2 - p4[3] ** 2)
    assert b.jets["mass"][1] == pytest.approx(mass, rel=1e-5)


def test_qg_npz_bad_input(tmp_path: Path) -> None:
    x = QG_X.copy()
    x[0, 0, 3] = 999.0
    with pytest.raises(InputError) as err:
        _convert(write_qg_npz(tmp_path / "pid.npz", x=x), tmp_path / "s")
    assert err.value.field == "X[..., 3] (pid)" and "999" in str(err.value)
    x = QG_X.copy()
    x[1, 1, 0] = np.nan
    with pytest.raises(InputError) as err:
        _convert(write_qg_npz(tmp_path / "nan.npz", x=x, compressed=False), tmp_path / "s")
    assert err.value.field == "X"
    with pytest.raises(InputError) as err:
        _convert(write_qg_npz(tmp_path / "lab.npz", y=np.array([0.5, 0.0, 1.0])), tmp_path / "s")
    assert err.value.field == "y"
    np.savez(tmp_path / "nox.npz", Z=QG_X, y=np.zeros(3))
    with pytest.raises(InputError) as err:
        _convert(tmp_path / "nox.npz", tmp_path / "s")
    assert err.value.field == "X"
    assert not (tmp_path / "s").exists()


# --------------------------------------------------------------------------------------------
# ParT .npy folder
def test_part_npy_roundtrip_and_errors(tmp_path: Path) -> None:
    src = _small_part_npy(tmp_path / "part")
    assert detect_format(src) == "part_npy"
    b = _convert(src, tmp_path / "s", chunk_size=7).read()
    assert b.n_jets == 40
    np.testing.assert_array_equal(b.counts(), 1 + np.arange(40) % 5)
    np.testing.assert_allclose(
        b.jets["pt"], [10.0 * (i + 1) + sum(range(1, 1 + i % 5)) for i in range(40)]
    )
    np.testing.assert_allclose(b.jets["mass"], 0.0, atol=1e-3)  # collinear massless particles
    with warnings.catch_warnings(record=True) as rec:  # 6 chunks, 16 jets with 4-5 particles
        warnings.simplefilter("always")
        cut = _convert(src, tmp_path / "cut", max_particles=3, chunk_size=7).read()
    msgs = [str(w.message) for w in rec if issubclass(w.category, ParticleTruncationWarning)]
    assert len(msgs) == 1 and "16 of 40 jets" in msgs[0]
    np.testing.assert_array_equal(cut.counts(), np.minimum(1 + np.arange(40) % 5, 3))
    np.testing.assert_allclose(cut.jets["pt"], b.jets["pt"])  # jet kinematics: all particles
    named = _convert(src, tmp_path / "s2", classes=["bkg", "sig"])
    assert named.classes == ["bkg", "sig"]
    with pytest.raises(InputError) as err:
        _convert(
            write_part_npy(
                tmp_path / "p2",
                np.zeros((2, 4, 3)),
                np.ones((2, 3)),
                np.zeros(2),
                drop=("pf_mask",),
            ),
            tmp_path / "s3",
        )
    assert err.value.field == "pf_mask.npy"
    with pytest.raises(InputError, match="at least one jet with particles"):
        _convert(
            write_part_npy(tmp_path / "p3", np.zeros((2, 4, 3)), np.zeros((2, 3)), np.zeros(2)),
            tmp_path / "s4",
        )


@pytest.mark.skipif(not REAL_QG.is_dir(), reason=f"real quark/gluon sample not found at {REAL_QG}")
def test_real_quark_gluon_sample(tmp_path: Path) -> None:
    store = _convert(REAL_QG, tmp_path / "qg", fractions=(0.8, 0.1, 0.1), shard_size=1000)
    assert store.n_jets() == 2000 and store.classes == ["gluon", "quark"]
    b = store.read()
    n, lab = b.counts(), b.jets["label"]
    assert np.count_nonzero(lab == 1) == 990
    assert 31 < n[lab == 1].mean() < 37 and 50 < n[lab == 0].mean() < 57  # ~34 vs ~53
    assert b.jets["pt"].min() > 499.0 and b.jets["pt"].max() < 551.0  # pT 500-550 GeV bin
    assert np.all(np.abs(b.jets["eta"]) < 2.0)  # |y| < 1.7 selection (eta close to y)
    assert 20.0 < np.median(b.jets["mass"]) < 60.0 and b.jets["mass"].max() < 200.0  # R = 0.4
    pt = b.particles["pt"]
    jet_of = np.repeat(np.arange(b.n_jets), n)
    same_jet = jet_of[1:] == jet_of[:-1]
    assert np.all(np.diff(pt)[same_jet] <= 0)  # pT-descending inside every jet


# --------------------------------------------------------------------------------------------
# convert: splits, options, atomicity, detection
def test_convert_splits_are_deterministic_and_disjoint(tmp_path: Path) -> None:
    src = _small_part_npy(tmp_path / "part", n=200)

    def lead_pts(store: Store, split: str) -> set[float]:
        b = store.read(split)
        return {float(x) for x in b.particles["pt"][b.offsets[:-1]]}  # 10*(row+1): row id

    a = _convert(src, tmp_path / "a", fractions=(0.6, 0.2, 0.2), seed=3, shard_size=16)
    c = _convert(
        src, tmp_path / "c", fractions=(0.6, 0.2, 0.2), seed=3, shard_size=1000, chunk_size=13
    )
    d = _convert(src, tmp_path / "d", fractions=(0.6, 0.2, 0.2), seed=4)
    sets = {s: lead_pts(a, s) for s in ("train", "val", "test")}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"])
    assert not (sets["val"] & sets["test"])
    assert set.union(*sets.values()) == {10.0 * (i + 1) for i in range(200)}
    assert 90 < len(sets["train"]) < 150 and len(sets["val"]) > 15 and len(sets["test"]) > 15
    for s in ("train", "val", "test"):
        assert lead_pts(c, s) == sets[s]  # independent of shard and chunk sizes
        assert all(n <= 16 for n in a.shard_sizes(s))
    assert lead_pts(d, "train") != sets["train"]  # another seed, another split
    for s in ("train", "val", "test"):
        for path in a.shards(s):
            assert path.name.startswith(s + "-")
    split = assign_splits(np.arange(100_000), seed=0)
    np.testing.assert_allclose(np.bincount(split) / 1e5, [0.8, 0.1, 0.1], atol=0.005)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"fractions": (0.5, 0.2, 0.2)}, "fractions"),
        ({"fractions": (1.2, -0.1, -0.1)}, "fractions"),
        ({"fractions": (1.0, 0.0)}, "fractions"),
        ({"shard_size": 0}, "shard_size"),
        ({"seed": -1}, "seed"),
        ({"max_particles": 0}, "max_particles"),
        ({"format": "csv"}, "format"),
        ({"classes": ["quark", "quark"]}, "classes"),
        ({"classes": "quark"}, "classes"),
        ({"chunk_size": 2.5}, "chunk_size"),
    ],
)
def test_convert_rejects_bad_options(tmp_path: Path, kwargs: dict, field: str) -> None:
    src = write_qg_npz(tmp_path / "qg.npz")
    with pytest.raises(InputError) as err:
        _convert(src, tmp_path / "s", **kwargs)
    assert err.value.field == field
    assert not (tmp_path / "s").exists()


def test_convert_refuses_to_overwrite_and_classes_must_exist(tmp_path: Path) -> None:
    src = write_qg_npz(tmp_path / "qg.npz")
    _convert(src, tmp_path / "s")
    before = json.loads((tmp_path / "s" / "manifest.json").read_text())
    with pytest.raises(InputError, match="non-empty folder"):
        _convert(src, tmp_path / "s")
    _convert(src, tmp_path / "s", overwrite=True, classes=["quark"])
    after = Store(tmp_path / "s")
    assert before["classes"] == ["gluon", "quark"] and after.classes == ["quark"]
    with pytest.raises(InputError) as err:
        open_reader(src, classes=["top"])
    assert err.value.field == "classes"


@pytest.mark.parametrize("kind", ["root", "toptagging", "jetnet", "npz", "npy"])
def test_truncated_files_raise_and_write_nothing(tmp_path: Path, kind: str) -> None:
    if kind == "npy":
        src = _small_part_npy(tmp_path / "part")
        victim = src / "pf_vectors.npy"
    else:
        src = {
            "root": lambda p: write_jetclass_root(p / "in.root"),
            "toptagging": lambda p: write_toptagging_h5(p / "in.h5"),
            "jetnet": lambda p: write_jetnet_h5(p / "g.hdf5"),
            "npz": lambda p: write_qg_npz(p / "in.npz"),
        }[kind](tmp_path)
        victim = src
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(InputError) as err:
        _convert(src, tmp_path / "out")
    assert err.value.file is not None and src.name in err.value.file
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp left


@pytest.mark.parametrize("name", ["in.root", "in.npz", "in.h5", "g.hdf5"])
def test_corrupt_files_raise(tmp_path: Path, name: str) -> None:
    """Bytes 5-20 % overwritten (headers / metadata / compressed blocks) -> InputError, no output.

    Silent corruption of *uncompressed* HDF5 payload (raw floats) cannot be detected by any reader;
    ROOT baskets and NPZ members carry compression / CRC checks that catch it.
    """
    writer = {
        "in.root": write_jetclass_root,
        "in.npz": write_qg_npz,
        "in.h5": write_toptagging_h5,
        "g.hdf5": write_jetnet_h5,
    }[name]
    src = writer(tmp_path / name)
    data = bytearray(src.read_bytes())
    lo, hi = len(data) // 20, len(data) // 5
    data[lo:hi] = b"\xa5" * (hi - lo)
    src.write_bytes(bytes(data))
    with pytest.raises(InputError) as err:
        _convert(src, tmp_path / "out")
    assert err.value.file is not None and name in err.value.file
    assert not (tmp_path / "out").exists()


def test_detect_format_rejects_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unrecognised header"):
        detect_format(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="no such path"):
        detect_format(tmp_path / "missing.root")
    with pytest.raises(InputError, match="pf_vectors"):
        detect_format(tmp_path)
