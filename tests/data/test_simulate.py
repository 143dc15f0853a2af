"""Pythia 8 + FastJet simulation: reproducibility, resumability, truth matching, physics sanity.

Samples are tiny (a few jets per class) so the whole file runs in well under a minute on 2 cores;
physics bands are therefore loose but still separate top, W and QCD jets.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from jetfm.core.errors import ConfigError
from jetfm.data.schema import JetBatch
from jetfm.data.simulate import (
    SimulationConfig,
    format_summary,
    generate_jets,
    impact_parameters,
    mass_peak,
    plan_units,
    simulate,
    summarize,
    unit_seed,
)
from jetfm.data.simulate.matching import daughters, decay_products, last_copy, match_jets
from jetfm.data.simulate.processes import PROCESSES
from jetfm.data.simulate.runner import split_counts
from jetfm.data.store import Store, read_shard, shard_path
from jetfm.physics.grooming import softdrop
from jetfm.physics.jets import jet_four_momentum

CLASSES = ["QCD", "Tbqq"]


def _cfg(output: Path, **kw: object) -> SimulationConfig:
    base: dict[str, object] = dict(
        classes=CLASSES, jets_per_class=10, shard_size=8, seed=11, output=output
    )
    base.update(kw)
    return SimulationConfig(**base)  # type: ignore[arg-type]


def _assert_same(a: JetBatch, b: JetBatch) -> None:
    np.testing.assert_array_equal(a.offsets, b.offsets)
    assert a.particles.keys() == b.particles.keys() and a.jets.keys() == b.jets.keys()
    for k in a.particles:
        np.testing.assert_array_equal(a.particles[k], b.particles[k], err_msg=k)
    for k in a.jets:
        np.testing.assert_array_equal(a.jets[k], b.jets[k], err_msg=k)


def _rapidity(e: np.ndarray, pz: np.ndarray) -> np.ndarray:
    e, pz = np.asarray(e, dtype=np.float64), np.asarray(pz, dtype=np.float64)
    return 0.5 * np.log((e + pz) / (e - pz))


def _read_all(root: Path) -> dict[str, JetBatch]:
    st = Store(root)
    return {s: st.read(split=s) for s in ("train", "val", "test")}


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sim") / "store"
    assert simulate(_cfg(root, workers=2), progress=False) == root
    return root


def test_store_contents(store_root: Path) -> None:
    st = Store(store_root)
    assert st.classes == CLASSES
    assert (st.n_jets("train"), st.n_jets("val"), st.n_jets("test")) == (16, 2, 2)
    batch = st.read()
    assert np.bincount(batch.jets["label"]).tolist() == [10, 10]
    assert {"tau21", "tau32"} <= set(batch.jets)
    assert set(batch.particles) == {
        "px", "py", "pz", "energy", "pt", "eta", "phi", "charge", "pid", "d0", "dz",
    }  # fmt: skip


def test_units_reproducible_regardless_of_workers(store_root: Path) -> None:
    # The fixture ran on 2 spawned workers; each unit regenerated here in-process with its own seed
    # must give the identical shard, so the sample does not depend on the number of workers.
    cfg = _cfg(store_root)
    units = {u.name: u for u in plan_units(cfg)}
    unit = units["Tbqq-train-00000"]
    again, _ = generate_jets(cfg, unit.class_name, unit.n_jets, unit.seed)
    _assert_same(read_shard(shard_path(store_root, unit.name)), again)
    other, _ = generate_jets(cfg, unit.class_name, unit.n_jets, unit.seed + 1)
    assert not np.array_equal(again.jets["pt"], other.jets["pt"])


def test_resume_after_deleted_shard(store_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "resumed"
    shutil.copytree(store_root, root)
    victim = shard_path(root, "Tbqq-val-00000")
    mtimes = {p.name: p.stat().st_mtime_ns for p in (root / "shards").glob("*.h5")}
    victim.unlink()
    (root / "manifest.json").unlink()  # as if killed before finalizing
    simulate(_cfg(root), progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (root / "shards").glob("*.h5")}
    assert after.keys() == mtimes.keys()
    rewritten = [n for n in after if after[n] != mtimes[n]]
    assert rewritten == [victim.name]  # completed shards were skipped
    a, b = _read_all(store_root), _read_all(root)
    for split in a:
        _assert_same(a[split], b[split])  # nothing lost, nothing duplicated


def test_resume_with_other_physics_settings_refused(store_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(store_root, root)
    with pytest.raises(ConfigError, match="tune"):
        simulate(_cfg(root, tune=5), progress=False)
    # runtime-only fields may change
    simulate(_cfg(root, workers=2), progress=False)


def test_particle_level_consistency(store_root: Path) -> None:
    batch = Store(store_root).read()
    p, j, off = batch.particles, batch.jets, batch.offsets
    # pT-sorted within each jet
    for i in range(batch.n_jets):
        pt = p["pt"][off[i] : off[i + 1]]
        assert np.all(np.diff(pt) <= 0)
    # constituents reproduce the jet four-momentum
    four = jet_four_momentum(p["px"], p["py"], p["pz"], p["energy"], off)
    np.testing.assert_allclose(four["pt"], j["pt"], rtol=1e-4)
    np.testing.assert_allclose(four["energy"], j["energy"], rtol=1e-4)
    np.testing.assert_allclose(four["mass"], j["mass"], rtol=1e-3, atol=0.05)
    np.testing.assert_allclose(four["eta"], j["eta"], atol=1e-4)
    assert np.all((j["pt"] > 500) & (j["pt"] < 1000) & (np.abs(j["eta"]) < 2.0))
    # constituents inside the anti-kT cone (nearly conical in rapidity-phi; eta differs slightly)
    rep = batch.counts()
    dphi = np.angle(np.exp(1j * (p["phi"] - np.repeat(j["phi"], rep))))
    y = _rapidity(p["energy"], p["pz"])
    jet_y = _rapidity(four["energy"], four["pz"])
    dr = np.hypot(y - np.repeat(jet_y, rep), dphi)
    assert np.quantile(dr, 0.99) < 0.8 and dr.max() < 1.0
    # charge from the PDG id; neutrinos excluded; neutral particles have no impact parameter
    pid, q = p["pid"], p["charge"]
    assert np.all(q[np.isin(pid, [211, 321, 2212, -11, -13])] == 1)
    assert np.all(q[np.isin(pid, [-211, -321, -2212, 11, 13])] == -1)
    assert np.all(q[np.isin(pid, [22, 130, 2112, 310])] == 0)
    assert not np.any(np.isin(np.abs(pid), [12, 14, 16]))
    assert np.all(p["d0"][q == 0] == 0) and np.all(p["dz"][q == 0] == 0)


def test_jet_masses_top_w_qcd(store_root: Path) -> None:
    batch = Store(store_root).read()
    m, lab = batch.jets["mass"], batch.jets["label"]
    top, qcd = np.median(m[lab == 1]), np.median(m[lab == 0])
    assert 140 < top < 215, top
    assert qcd < top - 30
    assert batch.counts()[lab == 1].mean() > 40
    w, _ = generate_jets(_cfg(Path("unused"), classes=["Wqq"]), "Wqq", 8, seed=5)
    assert 65 < np.median(w.jets["mass"]) < 110, w.jets["mass"]


def test_b_jets_have_displaced_tracks() -> None:
    hbb, _ = generate_jets(_cfg(Path("unused"), classes=["Hbb"]), "Hbb", 4, seed=3)
    p = hbb.particles
    charged = p["charge"] != 0
    assert charged.sum() > 20
    d0 = np.abs(p["d0"][charged])
    assert np.count_nonzero(d0 > 0.05) >= 4  # B and D hadron decay products, mm
    big = p["d0"][charged & (np.abs(p["d0"]) > 0.05)]
    assert np.mean(big > 0) > 0.5  # lifetime sign: mostly on the jet's side
    assert 90 < np.median(hbb.jets["mass"]) < 160


def test_impact_parameters_hand_values() -> None:
    # vertex (1, 0, 2) mm, momentum along +y: passes the beam line at distance 1 mm, PCA at (1, 0)
    d0, dz = impact_parameters(
        *(np.array([v]) for v in (1.0, 0.0, 2.0, 0.0, 5.0, 5.0)), np.array([1.0]), np.array([0.0])
    )
    assert d0[0] == pytest.approx(1.0) and dz[0] == pytest.approx(2.0)
    # same track, jet pointing to -x: negative lifetime sign
    d0, _ = impact_parameters(
        *(np.array([v]) for v in (1.0, 0.0, 2.0, 0.0, 5.0, 5.0)), np.array([-1.0]), np.array([0.0])
    )
    assert d0[0] == pytest.approx(-1.0)
    # vertex (1, 1, 0), momentum along (1, 1, 1): line through the beam axis, PCA = origin, z = -1
    d0, dz = impact_parameters(
        *(np.array([v]) for v in (1.0, 1.0, 0.0, 1.0, 1.0, np.sqrt(2.0))),
        np.array([1.0]),
        np.array([0.0]),
    )
    assert abs(d0[0]) < 1e-12 and dz[0] == pytest.approx(-np.sqrt(2.0))


def test_truth_matching_on_hand_record() -> None:
    # 0 system, 1 t (copy) -> 2 t (decays) -> 3 W+, 4 b; 3 W+ -> 5 u, 6 dbar
    ids = np.array([90, 6, 6, 24, 5, 2, -1])
    d1 = np.array([0, 2, 3, 5, 0, 0, 0])
    d2 = np.array([0, 0, 4, 6, 0, 0, 0])
    assert daughters(2, d1, d2) == [3, 4] and last_copy(1, ids, d1, d2) == 2
    assert sorted(decay_products(1, ids, d1, d2)) == [4, 5, 6]
    # products at eta 0 and phi 0, 0.3, -0.3 (massless, pT 100)
    phi = np.array([0, 0, 0, 0, 0.0, 0.3, -0.3])
    px, py, pz = 100 * np.cos(phi), 100 * np.sin(phi), np.zeros(7)
    jet_eta, jet_phi = np.array([0.0, 0.0, 0.0]), np.array([0.0, 0.6, 2.0])
    ok = match_jets(jet_eta, jet_phi, [[4, 5, 6]], px, py, pz, 0.8)
    assert ok.tolist() == [True, False, False]  # 2nd jet: dR to the phi=-0.3 quark is 0.9
    assert PROCESSES["Tbqq"].n_quarks == 3 and PROCESSES["Tbl"].n_leptons == 1


def test_plan_units_disjoint_and_seeds() -> None:
    cfg = SimulationConfig(classes=["QCD", "Hbb"], jets_per_class=23, shard_size=5, seed=1)
    units = plan_units(cfg)
    names = [u.name for u in units]
    assert len(set(names)) == len(names)
    for cls in cfg.classes:
        per = {
            s: sum(u.n_jets for u in units if u.class_name == cls and u.split == s)
            for s in ("train", "val", "test")
        }
        assert per == {"train": 18, "val": 3, "test": 2} or per == {
            "train": 19,
            "val": 2,
            "test": 2,
        }
        assert sum(per.values()) == 23
    seeds = [u.seed for u in units]
    assert len(set(seeds)) == len(seeds) and all(0 < s < 900_000_000 for s in seeds)
    assert unit_seed(1, "QCD", "train", 0) == units[0].seed


def test_largest_remainder_by_hand() -> None:
    """The rounding shared by the simulation's splits and `jetfm refine`'s class shares."""
    from jetfm.core.rounding import largest_remainder

    assert largest_remainder(10, [10 / 3] * 3) == [4, 3, 3]  # ties: the first gets the unit
    assert largest_remainder(23, [18.4, 2.3, 2.3]) == [19, 2, 2]  # 0.4 beats 0.3
    assert largest_remainder(7, [3.5, 3.5]) == [4, 3]
    assert largest_remainder(5, [5.0, 0.0]) == [5, 0]
    assert split_counts(23, {"train": 0.8, "val": 0.1, "test": 0.1}) == {
        "train": 19,
        "val": 2,
        "test": 2,
    }


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"classes": ["Top"]}, "classes"),
        ({"classes": []}, "classes"),
        ({"jets_per_class": 0}, "jets_per_class"),
        ({"pt_min": 800.0, "pt_max": 600.0}, "pt_min"),
        ({"abs_eta_max": -1.0}, "abs_eta_max"),
        ({"jet_radius": 0.0}, "jet_radius"),
        ({"seed": 900_000_000}, "seed"),
        ({"workers": 0}, "workers"),
        ({"shard_size": 0}, "shard_size"),
        ({"train_fraction": 0.5}, "train_fraction"),
        ({"val_fraction": -0.1, "train_fraction": 1.0}, "val_fraction"),
        ({"ecm": 1500.0}, "ecm"),
        ({"extra_settings": ["nonsense"]}, "extra_settings[0]"),
    ],
)
def test_config_validation(kw: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        SimulationConfig(**kw)
    assert err.value.field == field


def test_summary_on_batch_and_store(store_root: Path) -> None:
    assert mass_peak(np.array([172.0, 173.0, 174.0, 90.0])) == pytest.approx(172.5)
    s = summarize(store_root)
    assert list(s["classes"]) == CLASSES and s["n_jets"] == 20
    assert s["classes"]["Tbqq"]["jets"] == 10
    b = Store(store_root).read()
    s2 = summarize(b, classes=CLASSES)
    assert s2["classes"]["QCD"]["mass_mean"] == pytest.approx(
        float(np.mean(b.jets["mass"][b.jets["label"] == 0]))
    )
    # the groomed peak is the soft-drop mass's histogram mode, never above the plain mass's
    p = b.particles
    msd = softdrop(p["px"], p["py"], p["pz"], p["energy"], b.offsets)["mass_sd"]
    top = b.jets["label"] == CLASSES.index("Tbqq")
    assert s2["classes"]["Tbqq"]["sd_mass_peak"] == mass_peak(msd[top])
    assert (msd <= b.jets["mass"] + 1e-3).all()
    text = format_summary(s)
    assert "Tbqq" in text and "QCD" in text and "m peak" in text and "mSD pk" in text
    assert "first" not in text  # every jet was groomed
    # on a large store the soft-drop peak comes from the first jets of each class only
    s3 = summarize(b, classes=CLASSES, sd_jets_per_class=4)
    first4 = np.flatnonzero(top)[:4]
    assert s3["classes"]["Tbqq"]["sd_jets"] == 4 and s3["classes"]["Tbqq"]["jets"] == 10
    assert s3["classes"]["Tbqq"]["sd_mass_peak"] == mass_peak(msd[first4])
    assert s3["classes"]["Tbqq"]["mass_mean"] == s2["classes"]["Tbqq"]["mass_mean"]
    assert "mSD pk from the first 4 jets of each class" in format_summary(s3)


def test_unknown_pythia_setting_is_a_config_error() -> None:
    cfg = _cfg(Path("unused"), extra_settings=["NoSuchGroup:noSuchKey = 3"])
    with pytest.raises(ConfigError) as err:
        generate_jets(cfg, "QCD", 1, seed=1)
    assert err.value.field == "extra_settings"
