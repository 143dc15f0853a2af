"""Per-particle features relative to the jet axis."""

import math

import numpy as np
import pytest

from jetfm.core.errors import InputError
from jetfm.physics.kinematics import ptetaphi_to_pxpypz
from jetfm.physics.observables import LOG_FLOOR, constituent_features, safe_rapidity


def _massless(pt, eta, phi):
    px, py, pz = ptetaphi_to_pxpypz(
        np.asarray(pt, float), np.asarray(eta, float), np.asarray(phi, float)
    )
    return px, py, pz, np.sqrt(px**2 + py**2 + pz**2)


def test_two_particles_symmetric_about_axis():
    # equal pT at the same eta, phi = +-0.2: the jet axis is at phi = 0 by symmetry
    px, py, pz, e = _massless([10.0, 10.0], [0.0, 0.0], [0.2, -0.2])
    f = constituent_features(px, py, pz, e, np.array([0, 2]))
    np.testing.assert_allclose(f["dphi"], [0.2, -0.2], atol=1e-12)
    np.testing.assert_allclose(f["deta"], [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(f["delta_r"], [0.2, 0.2], atol=1e-12)
    jet_pt = 20 * math.cos(0.2)
    np.testing.assert_allclose(f["pt_frac"], [10 / jet_pt] * 2)
    np.testing.assert_allclose(f["e_frac"], [0.5, 0.5])
    np.testing.assert_allclose(f["log_pt"], [math.log(10.0)] * 2)
    np.testing.assert_allclose(f["log_e_rel"], [math.log(0.5)] * 2)
    np.testing.assert_allclose(f["log_pt_rel"], np.log(f["pt_frac"]))


def test_dphi_wraps_for_jet_at_pi_and_empty_jet_in_between():
    p1 = _massless([10.0, 10.0], [1.0, 1.0], [np.pi - 0.1, -np.pi + 0.1])
    p2 = _massless([5.0], [0.0], [0.0])
    flat = [np.concatenate([a, b]) for a, b in zip(p1, p2, strict=True)]
    f = constituent_features(*flat, np.array([0, 2, 2, 3]))
    np.testing.assert_allclose(np.abs(f["dphi"][:2]), [0.1, 0.1], atol=1e-9)
    assert f["dphi"][0] == pytest.approx(-f["dphi"][1])
    np.testing.assert_allclose(f["deta"][:2], [0.0, 0.0], atol=5e-3)  # E-scheme eta ~ 1
    assert f["delta_r"][2] == pytest.approx(0.0, abs=1e-12)
    assert f["pt_frac"][2] == pytest.approx(1.0)


def test_zero_pt_particle_stays_finite():
    px, py, pz, e = (
        np.array([0.0, 1.0]),
        np.array([0.0, 0.0]),
        np.array([0.0, 0.0]),
        np.array([0.0, 1.0]),
    )
    f = constituent_features(px, py, pz, e, np.array([0, 2]))
    for k, v in f.items():
        assert np.all(np.isfinite(v)), k
    assert f["log_pt"][0] == pytest.approx(math.log(LOG_FLOOR))


def test_bad_offsets_raise():
    # the same InputError (a ValueError naming the field) as every other jagged physics function
    with pytest.raises(InputError, match="'offsets'"):
        constituent_features(np.ones(3), np.ones(3), np.ones(3), np.ones(3) * 2, np.array([0, 2]))
    with pytest.raises(InputError, match="non-decreasing"):
        constituent_features(
            np.ones(3), np.ones(3), np.ones(3), np.ones(3) * 2, np.array([0, 2, 1, 3])
        )


def test_safe_rapidity():
    assert safe_rapidity(0.0, 0.0, 3.0, 5.0) == pytest.approx(math.log(2.0))
    assert safe_rapidity(0.0, 0.0, -3.0, 5.0) == pytest.approx(-math.log(2.0))
    # massless along the beam: capped, not inf; at rest: 0
    np.testing.assert_array_equal(
        safe_rapidity([0.0, 0.0, 0.0], [0, 0, 0], [5.0, -5.0, 0.0], [5.0, 5.0, 0.0]),
        [1e5, -1e5, 0.0],
    )
    # massless: rapidity == pseudorapidity
    px, py, pz, e = _massless([2.0], [1.3], [0.4])
    assert safe_rapidity(px, py, pz, e)[0] == pytest.approx(1.3)


def test_safe_rapidity_of_massless_particle_with_rounded_energy():
    # float32 energy of a forward massless particle: E^2 - p^2 < 0 by rounding; y must still equal eta
    px, py, pz, _ = _massless([1.0], [3.0], [0.0])
    e32 = np.float32(np.sqrt(px**2 + py**2 + pz**2)[0])
    assert safe_rapidity(px, py, pz, np.array([e32], dtype=np.float64))[0] == pytest.approx(
        3.0, abs=1e-5
    )
