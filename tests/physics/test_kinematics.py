"""Kinematics: hand-computed values, phi wrap-around at +-pi, pT = 0."""

import math

import numpy as np
import pytest

from jetfm.physics.kinematics import (
    delta_phi,
    delta_r,
    invariant_mass,
    ptetaphi_to_pxpypz,
    ptetaphim_to_energy,
    pxpypz_to_ptetaphi,
    wrap_phi,
)


def test_wrap_phi_maps_into_half_open_interval():
    phi = np.array([np.pi, -np.pi, 3 * np.pi, -3 * np.pi, 0.5, 2 * np.pi + 0.1, -2 * np.pi - 0.1])
    expected = np.array([np.pi, np.pi, np.pi, np.pi, 0.5, 0.1, -0.1])
    np.testing.assert_allclose(wrap_phi(phi), expected, atol=1e-12)
    assert np.all(wrap_phi(np.linspace(-20, 20, 1001)) > -np.pi)
    assert np.all(wrap_phi(np.linspace(-20, 20, 1001)) <= np.pi)


def test_wrap_phi_keeps_float32_and_converts_integers():
    out32 = wrap_phi(np.array([np.pi, -np.pi, 4.0], dtype=np.float32))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, [np.pi, np.pi, 4.0 - 2 * np.pi], atol=1e-6)
    out_int = wrap_phi(np.array([1, 4]))
    assert out_int.dtype.kind == "f"
    np.testing.assert_allclose(out_int, [1.0, 4.0 - 2 * np.pi])


def test_delta_phi_across_the_branch_cut():
    # 3.1 - (-3.1) = 6.2 rad, i.e. -0.0832 rad the short way round.
    assert delta_phi(3.1, -3.1) == pytest.approx(6.2 - 2 * np.pi)
    assert delta_phi(-3.1, 3.1) == pytest.approx(2 * np.pi - 6.2)
    assert delta_phi(np.pi, -np.pi) == pytest.approx(0.0, abs=1e-12)


def test_delta_r_hand_values_and_wrap():
    # dphi across the cut is 0.4, not 2 pi - 0.4
    assert delta_r(0.0, np.pi - 0.2, 0.3, -np.pi + 0.2) == pytest.approx(0.5)
    assert delta_r(1.0, 3.1, 1.0, -3.1) == pytest.approx(2 * np.pi - 6.2)
    np.testing.assert_allclose(
        delta_r(np.zeros(3), np.zeros(3), [0.3, 0.0, 0.3], [0.0, 0.4, 0.4]), [0.3, 0.4, 0.5]
    )


def test_pxpypz_to_ptetaphi_hand_values():
    pt, eta, phi = pxpypz_to_ptetaphi(
        [3.0, 1.0, -1.0], [4.0, 0.0, 0.0], [0.0, math.sinh(1.0), -math.sinh(2.0)]
    )
    np.testing.assert_allclose(pt, [5.0, 1.0, 1.0])
    np.testing.assert_allclose(eta, [0.0, 1.0, -2.0], atol=1e-12)
    np.testing.assert_allclose(phi, [math.atan2(4, 3), 0.0, np.pi])


def test_phi_of_negative_x_axis_is_plus_pi():
    # arctan2(-0.0, -1) is -pi; the convention is (-pi, pi].
    _, _, phi = pxpypz_to_ptetaphi([-1.0], [-0.0], [0.0])
    assert phi[0] == pytest.approx(np.pi)


def test_zero_pt_gives_finite_capped_eta():
    pt, eta, phi = pxpypz_to_ptetaphi([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [5.0, -5.0, 0.0])
    np.testing.assert_array_equal(pt, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(eta, [1e4, -1e4, 0.0])
    assert np.all(np.isfinite(phi))


def test_ptetaphi_round_trip():
    rng = np.random.default_rng(0)
    pt, eta, phi = rng.uniform(0.1, 100, 50), rng.uniform(-4, 4, 50), rng.uniform(-np.pi, np.pi, 50)
    back = pxpypz_to_ptetaphi(*ptetaphi_to_pxpypz(pt, eta, phi))
    for a, b in zip(back, (pt, eta, phi), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_energy_and_mass_hand_values():
    assert ptetaphim_to_energy(3.0, 0.0, 4.0) == pytest.approx(5.0)
    assert ptetaphim_to_energy(1.0, 1.0) == pytest.approx(math.cosh(1.0))
    assert invariant_mass(5.0, 3.0, 0.0, 0.0) == pytest.approx(4.0)
    # two back-to-back massless particles of E = 1: m = 2
    assert invariant_mass(2.0, 0.0, 0.0, 0.0) == pytest.approx(2.0)
    # a massless particle with rounding noise (E^2 - p^2 < 0) is clipped to 0, not NaN
    assert invariant_mass(1.0, 1.0 + 1e-12, 0.0, 0.0) == 0.0
