"""Classifier-based refinement: density-ratio weights against known answers, invariant features, and
the `jetfm refine` store end to end on toy jets with a known defect."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from jetfm.cli import app
from jetfm.core.config import load_config
from jetfm.core.errors import ConfigError, InputError
from jetfm.data.schema import JetBatch
from jetfm.data.store import Store, finalize_store, write_shard
from jetfm.evaluate.refine import (
    N_LEADING,
    N_PAIRS,
    RefineConfig,
    density_ratio,
    density_ratio_classifier,
    effective_sample_size,
    refine,
    refine_features,
    rejection_accept,
)
from jetfm.physics.jets import jet_four_momentum
from jetfm.physics.kinematics import ptetaphi_to_pxpypz, wrap_phi
from tests.conftest import make_toy_jets, write_toy_store


def _rebuild(b: JetBatch, pt: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> JetBatch:
    """``b`` with new particle (pt, eta, phi); momenta and jet fields recomputed (massless)."""
    px, py, pz = ptetaphi_to_pxpypz(pt, eta, phi)
    e = np.sqrt(px**2 + py**2 + pz**2)
    p = {**b.particles, "px": px, "py": py, "pz": pz, "energy": e, "pt": pt, "eta": eta, "phi": phi}
    j4 = jet_four_momentum(px, py, pz, e, b.offsets)
    jets = {**b.jets, **{k: j4[k] for k in ("pt", "eta", "phi", "mass", "energy")}}
    return JetBatch(offsets=b.offsets, particles=p, jets=jets).cast()


def _widened(b: JetBatch, scale: np.ndarray) -> JetBatch:
    """Each jet's particles moved ``scale`` (per jet) times as far from its axis in (eta, phi)."""
    c = b.counts()
    s = np.repeat(scale, c)
    ae, ap = np.repeat(b.jets["eta"], c), np.repeat(b.jets["phi"], c)
    eta = ae + s * (b.particles["eta"] - ae)
    phi = wrap_phi(ap + s * wrap_phi(b.particles["phi"] - ap))
    return _rebuild(b, b.particles["pt"].astype(np.float64), eta, phi)


def _width(b: JetBatch) -> float:
    """Mean pT-weighted distance of the particles from their jet axis (the toy defect's size)."""
    c = b.counts()
    ae, ap = np.repeat(b.jets["eta"], c), np.repeat(b.jets["phi"], c)
    dr = np.hypot(b.particles["eta"] - ae, wrap_phi(b.particles["phi"] - ap))
    pt = b.particles["pt"].astype(np.float64)
    jet = np.repeat(np.arange(b.n_jets), c)
    return float(np.mean(np.bincount(jet, pt * dr) / np.bincount(jet, pt)))


def test_density_ratio_of_two_gaussians() -> None:
    """Simulated N(0, 1) vs generated N(0.5, 1): the AUC is Phi(0.5 / sqrt 2) = 0.638 by hand, and
    the jets kept by rejection have mean ~0 (the generated pool: 0.5)."""
    rng = np.random.default_rng(0)
    n = 6000
    gen = np.stack([rng.normal(0.5, 1, n), rng.normal(0, 1, n)], axis=1)  # 2nd column: no signal
    ref = np.stack([rng.normal(0.0, 1, n), rng.normal(0, 1, n)], axis=1)
    clf, auc = density_ratio_classifier(gen, ref, seed=0)
    assert auc == pytest.approx(0.5 * (1 + math.erf(0.5 / 2)), abs=0.03)
    cand = np.stack([rng.normal(0.5, 1, n), rng.normal(0, 1, n)], axis=1)
    w = density_ratio(clf, cand)
    assert np.average(cand[:, 0], weights=w) == pytest.approx(0.0, abs=0.08)
    acc, w_max = rejection_accept(w, rng, 0.99)
    assert w_max == pytest.approx(np.quantile(w, 0.99))
    assert cand[acc, 0].mean() == pytest.approx(0.0, abs=0.08)
    assert cand[acc, 1].mean() == pytest.approx(0.0, abs=0.08)
    # the true log-ratio is -0.5 x + 1/8: the learned one follows it
    assert np.corrcoef(np.log(w), -0.5 * cand[:, 0])[0, 1] > 0.8


def test_rejection_probabilities_and_ess() -> None:
    w = np.tile([1.0, 2.0, 4.0], 20000)
    acc, w_max = rejection_accept(w, np.random.default_rng(1), 1.0)
    assert w_max == 4.0
    rates = [acc[w == v].mean() for v in (1.0, 2.0, 4.0)]
    assert rates == pytest.approx([0.25, 0.5, 1.0], abs=0.01)
    assert effective_sample_size(np.ones(4)) == pytest.approx(4.0)
    assert effective_sample_size(np.array([1.0, 0, 0, 0])) == pytest.approx(1.0)
    assert effective_sample_size(np.array([1.0, 3.0])) == pytest.approx(16 / 10)


def test_features_ignore_particle_order_and_jet_rotation() -> None:
    b = make_toy_jets(30, seed=2)
    f0, names = refine_features(b, ["particles", "observables"])
    assert f0.shape == (30, len(names)) and len(names) == 2 * N_LEADING + 6 + 4 + 5
    assert N_PAIRS == 4
    rng = np.random.default_rng(0)
    c = b.counts()
    perm = np.concatenate([o + rng.permutation(n) for o, n in zip(b.offsets[:-1], c, strict=True)])
    shuffled = JetBatch(
        offsets=b.offsets, particles={k: v[perm] for k, v in b.particles.items()}, jets=b.jets
    )
    np.testing.assert_allclose(refine_features(shuffled, ["particles", "observables"])[0], f0)
    turn = np.repeat(rng.uniform(-np.pi, np.pi, 30), c)  # each jet turned about the beam axis
    p = b.particles
    rotated = _rebuild(b, p["pt"].astype(np.float64), p["eta"], wrap_phi(p["phi"] + turn))
    f1, _ = refine_features(rotated, ["particles", "observables"])
    np.testing.assert_allclose(f1, f0, rtol=1e-5, atol=1e-6)
    # a jet with two particles: leading 3..7 are missing (NaN), their pairwise distances too
    two = make_toy_jets(200, seed=5)
    k = int(np.argmin(two.counts()))
    one = two.select(np.array([k])).truncate(2)
    f2, names2 = refine_features(one, ["particles"])
    row = dict(zip(names2, f2[0], strict=True))
    assert np.isfinite(row["p1_dR"]) and np.isnan(row["p2_dR"]) and np.isnan(row["dR_p0p2"])
    assert np.isfinite(row["dR_p0p1"])


def _pool_store(root: Path, n: int, seed: int) -> tuple[Path, float]:
    """A 'generated' store: toy jets, a third of them twice as wide as the simulation's."""
    b = make_toy_jets(n, seed=seed)
    rng = np.random.default_rng(seed)
    scale = np.where(rng.uniform(size=n) < 1 / 3, 2.0, 1.0)
    b = _widened(b, scale)
    write_shard(root, "generated-00000", b, split="test")
    src = {"generator": "toy pool", "sampling": {"max_length": 64}, "jet_radius": 0.8}
    finalize_store(root, classes=["QCD", "Tbqq"], source=src)
    return root, _width(b)


def test_refine_removes_a_known_defect(tmp_path: Path) -> None:
    ref = write_toy_store(tmp_path / "sim", {"train": 1600, "test": 1000}, seed=4)
    pool, w_pool = _pool_store(tmp_path / "pool", 3000, seed=9)
    w_ref = _width(Store(ref).read("test").truncate(64))
    out = tmp_path / "refined"
    summary = refine(pool, ref, out, n_jets=250, seed=0)
    st = Store(out)
    kept = st.read()
    assert kept.n_jets == 250 and st.classes == ["QCD", "Tbqq"]
    # the defect is mostly gone: the kept jets' width is far closer to the simulation's
    w_kept = _width(kept)
    assert abs(w_kept - w_ref) < 0.35 * abs(w_pool - w_ref), (w_pool, w_kept, w_ref)
    # classes kept in the candidates' proportions; diagnostics recorded
    for name, d in summary["classes"].items():
        assert 0.6 < d["classifier_auc"] < 1.0, name
        assert d["kept"] <= d["accepted"] <= d["candidates"]
    counts = np.bincount(kept.jets["label"], minlength=2)
    cand = [summary["classes"][c]["candidates"] for c in ("QCD", "Tbqq")]
    assert abs(counts[0] - 250 * cand[0] / sum(cand)) <= 1
    src = st.manifest["source"]
    assert src["sampling"] == {"max_length": 64} and src["refine"]["n_jets"] == 250
    assert json.loads((out / "refine.json").read_text())["features"][0] == "p0_dR"
    # seeded: the same jets again
    again = refine(pool, ref, tmp_path / "again", n_jets=250, seed=0)
    assert again["classes"] == summary["classes"]
    np.testing.assert_array_equal(
        Store(tmp_path / "again").read().particles["pt"], kept.particles["pt"]
    )
    # a finished store is not overwritten silently; too small a pool is named with what it needs
    with pytest.raises(InputError, match="overwrite"):
        refine(pool, ref, out, n_jets=250)
    with pytest.raises(InputError, match="pool of about"):
        refine(pool, ref, tmp_path / "big", n_jets=1400)
    assert not (tmp_path / "big" / "manifest.json").exists()
    # the command line does the same; without n_jets it keeps as many as every class allows, in
    # the candidates' class proportions
    r = CliRunner().invoke(
        app, ["refine", f"generated={pool}", f"reference={ref}", f"output={tmp_path / 'cli'}"]
    )
    assert r.exit_code == 0, r.output
    assert "classifier AUC" in r.output
    info = json.loads((tmp_path / "cli" / "refine.json").read_text())["classes"]
    n_all = Store(tmp_path / "cli").n_jets()
    counts = np.bincount(Store(tmp_path / "cli").read().jets["label"], minlength=2)
    assert min(info[c]["accepted"] - info[c]["kept"] for c in info) <= 1  # one class used up
    assert abs(counts[0] - n_all * cand[0] / sum(cand)) <= 1
    assert n_all > 250


def test_refine_config() -> None:
    path = Path(__file__).resolve().parents[2] / "configs" / "refine.yaml"
    cfg = load_config(RefineConfig, path)
    assert cfg.features == ["particles"] and cfg.split == "train"
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(RefineConfig, path, ["feature=[particles]"])
    with pytest.raises(ConfigError, match="features"):
        load_config(RefineConfig, path, ["features=[pixels]"])
    with pytest.raises(ConfigError, match="train_fraction"):
        load_config(RefineConfig, path, ["train_fraction=1.0"])
