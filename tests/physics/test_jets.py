"""Jet sums over jagged constituents: hand values, empty jets, phi wrap, agreement with FastJet."""

import math

import numpy as np
import pytest

from jetfm.physics.jets import jet_four_momentum, segment_sum
from jetfm.physics.kinematics import ptetaphi_to_pxpypz


def test_segment_sum_with_empty_jets():
    np.testing.assert_array_equal(
        segment_sum([1.0, 2.0, 3.0, 4.0], [0, 0, 2, 2, 4]), [0.0, 3.0, 0.0, 7.0]
    )
    assert segment_sum(np.zeros(0), [0]).shape == (0,)


def test_two_massless_particles_hand_values():
    # (px, py, pz, E) = (1, 0, 0, 1) + (0, 1, 0, 1)
    jet = jet_four_momentum([1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0], [0, 2])
    assert jet["pt"][0] == pytest.approx(math.sqrt(2))
    assert jet["eta"][0] == pytest.approx(0.0)
    assert jet["phi"][0] == pytest.approx(math.pi / 4)
    assert jet["mass"][0] == pytest.approx(math.sqrt(2))  # sqrt(2^2 - 2)
    assert jet["energy"][0] == pytest.approx(2.0)


def test_empty_jet_is_zero_and_finite():
    jet = jet_four_momentum([1.0], [0.0], [0.0], [1.0], [0, 0, 1])
    for key in ("px", "py", "pz", "energy", "pt", "mass", "eta", "phi"):
        assert np.all(np.isfinite(jet[key]))
        assert jet[key][0] == 0.0
    assert jet["pt"][1] == pytest.approx(1.0)


def test_jet_straddling_phi_pi():
    px, py, pz = ptetaphi_to_pxpypz(
        np.array([10.0, 10.0]), np.array([0.5, 0.5]), np.array([3.1, -3.1])
    )
    energy = np.sqrt(px**2 + py**2 + pz**2)
    jet = jet_four_momentum(px, py, pz, energy, [0, 2])
    assert abs(jet["phi"][0]) == pytest.approx(math.pi)
    assert jet["eta"][0] == pytest.approx(0.5, abs=1e-3)
    # m^2 = 2 pT1 pT2 (cosh(deta) - cos(dphi)) for massless particles
    assert jet["mass"][0] == pytest.approx(math.sqrt(2 * 100 * (1 - math.cos(6.2 - 2 * math.pi))))


def _toy_event(rng: np.random.Generator, n_clusters: int = 3, per: int = 25) -> np.ndarray:
    rows = []
    for _ in range(n_clusters):
        eta0, phi0 = rng.uniform(-2, 2), rng.uniform(-np.pi, np.pi)
        pt = rng.exponential(15.0, per) + 0.5
        eta = eta0 + rng.normal(0, 0.2, per)
        phi = phi0 + rng.normal(0, 0.2, per)
        mass = rng.choice([0.0, 0.1396, 0.4937], per)
        px, py, pz = ptetaphi_to_pxpypz(pt, eta, phi)
        rows.append(np.stack([px, py, pz, np.sqrt(px**2 + py**2 + pz**2 + mass**2)], axis=1))
    return np.concatenate(rows)


def test_agrees_with_fastjet_escheme_antikt_jets():
    fastjet = pytest.importorskip("fastjet")
    rng = np.random.default_rng(42)
    jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, 0.8)
    n_checked = 0
    for _ in range(4):
        event = _toy_event(rng)
        cs = fastjet.ClusterSequence([fastjet.PseudoJet(*map(float, p)) for p in event], jetdef)
        jets = fastjet.sorted_by_pt(cs.inclusive_jets(5.0))
        consts = [j.constituents() for j in jets]
        flat = np.array([[c.px(), c.py(), c.pz(), c.E()] for cc in consts for c in cc])
        offsets = np.concatenate([[0], np.cumsum([len(cc) for cc in consts])])
        ours = jet_four_momentum(flat[:, 0], flat[:, 1], flat[:, 2], flat[:, 3], offsets)
        np.testing.assert_allclose(ours["pt"], [j.pt() for j in jets], rtol=1e-9)
        np.testing.assert_allclose(ours["eta"], [j.eta() for j in jets], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(ours["phi"], [j.phi_std() for j in jets], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(ours["mass"], [j.m() for j in jets], rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(ours["energy"], [j.E() for j in jets], rtol=1e-12)
        n_checked += len(jets)
    assert n_checked >= 8
