"""N-subjettiness (beta = 1, exclusive-kT axes, normalised by sum pT * R)."""

import math

import numpy as np
import pytest

from jetfm.physics.kinematics import ptetaphi_to_pxpypz
from jetfm.physics.observables import nsubjettiness

pytest.importorskip("fastjet")
BACKENDS = ("numpy", "fjcontrib")


def _massless(pt, eta, phi):
    px, py, pz = ptetaphi_to_pxpypz(
        np.asarray(pt, float), np.asarray(eta, float), np.asarray(phi, float)
    )
    return px, py, pz, np.sqrt(px**2 + py**2 + pz**2)


def _random_jets(rng, n_jets, lo, hi, mass=True):
    counts = rng.integers(lo, hi + 1, n_jets)
    n = counts.sum()
    pt = rng.exponential(10.0, n) + 0.5
    eta = np.repeat(rng.uniform(-2, 2, n_jets), counts) + rng.normal(0, 0.25, n)
    phi = np.repeat(rng.uniform(-np.pi, np.pi, n_jets), counts) + rng.normal(0, 0.25, n)
    px, py, pz = ptetaphi_to_pxpypz(pt, eta, phi)
    m = rng.choice([0.0, 0.1396], n) if mass else np.zeros(n)
    e = np.sqrt(px**2 + py**2 + pz**2 + m**2)
    return px, py, pz, e, np.concatenate([[0], np.cumsum(counts)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_computed_small_jets(backend):
    # jet 0: one particle -> all taus 0
    # jet 1: two equal-pT particles at y=0, phi=+-0.2: 1 axis at phi=0 -> tau1 = 0.4 / (2 * 0.8) = 0.25
    # jet 2: three pT=1 particles at y=0, phi = 0, 0.1, 0.5: kT merges (0, 0.1) first -> axis at 0.05;
    #        tau2 = (0.05 + 0.05 + 0) / (3 * 0.8); tau1 axis at atan2(sum sin, sum cos)
    # jet 3: empty
    parts = [
        _massless([7.0], [0.3], [1.0]),
        _massless([5.0, 5.0], [0.0, 0.0], [0.2, -0.2]),
        _massless([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.1, 0.5]),
    ]
    flat = [np.concatenate([p[k] for p in parts]) for k in range(4)]
    out = nsubjettiness(*flat, np.array([0, 1, 3, 6, 6]), backend=backend)
    axis3 = math.atan2(math.sin(0.1) + math.sin(0.5), 1 + math.cos(0.1) + math.cos(0.5))
    tau1_3 = (abs(axis3) + abs(0.1 - axis3) + abs(0.5 - axis3)) / (3 * 0.8)
    np.testing.assert_allclose(out["tau1"], [0.0, 0.25, tau1_3, 0.0], atol=1e-12)
    np.testing.assert_allclose(out["tau2"], [0.0, 0.0, 0.1 / 2.4, 0.0], atol=1e-12)
    np.testing.assert_allclose(out["tau3"], [0.0, 0.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(out["tau21"], [0.0, 0.0, (0.1 / 2.4) / tau1_3, 0.0], atol=1e-12)
    np.testing.assert_array_equal(out["tau32"], [0.0, 0.0, 0.0, 0.0])
    assert set(out) == {"tau1", "tau2", "tau3", "tau21", "tau32"}


def test_normalisation_scales_with_radius():
    px, py, pz, e = _massless([5.0, 5.0], [0.0, 0.0], [0.2, -0.2])
    assert nsubjettiness(px, py, pz, e, np.array([0, 2]), R=0.4)["tau1"][0] == pytest.approx(0.5)


def _brute_force_taus(px, py, pz, e, n_max, R):
    """Independent reference: naive exclusive-kT clustering (E-scheme, no beam) + direct sum."""

    def rap_phi(p):
        y = 0.5 * math.log((p[3] + p[2]) / (p[3] - p[2]))
        return y, math.atan2(p[1], p[0])

    def dr2(a, b):
        (ya, fa), (yb, fb) = rap_phi(a), rap_phi(b)
        dphi = abs(fa - fb)
        dphi = min(dphi, 2 * math.pi - dphi)
        return (ya - yb) ** 2 + dphi**2

    parts = [np.array(p) for p in zip(px, py, pz, e, strict=True)]
    pts = [math.hypot(p[0], p[1]) for p in parts]
    norm = sum(pts) * R
    taus = []
    for n in range(1, n_max + 1):
        jets = [p.copy() for p in parts]
        while len(jets) > n:
            best = None
            for i in range(len(jets)):
                for j in range(i + 1, len(jets)):
                    kt2 = min(jets[i][0] ** 2 + jets[i][1] ** 2, jets[j][0] ** 2 + jets[j][1] ** 2)
                    d = kt2 * dr2(jets[i], jets[j])
                    if best is None or d < best[0]:
                        best = (d, i, j)
            _, i, j = best
            jets[i] = jets[i] + jets[j]
            del jets[j]
        num = sum(
            pt * min(math.sqrt(dr2(p, a)) for a in jets) for p, pt in zip(parts, pts, strict=True)
        )
        taus.append(num / norm)
    return taus


@pytest.mark.parametrize("backend", BACKENDS)
def test_against_brute_force_exclusive_kt(backend):
    rng = np.random.default_rng(7)
    px, py, pz, e, off = _random_jets(rng, 12, 1, 12)
    out = nsubjettiness(px, py, pz, e, off, n_max=3, R=0.8, backend=backend)
    for j in range(len(off) - 1):
        sl = slice(off[j], off[j + 1])
        ref = _brute_force_taus(px[sl], py[sl], pz[sl], e[sl], 3, 0.8)
        np.testing.assert_allclose(
            [out[f"tau{n}"][j] for n in (1, 2, 3)], ref, rtol=1e-9, atol=1e-12
        )


def test_backends_agree_and_chunking_changes_nothing():
    rng = np.random.default_rng(3)
    px, py, pz, e, off = _random_jets(rng, 150, 0, 80)
    a = nsubjettiness(px, py, pz, e, off, backend="numpy")
    b = nsubjettiness(px, py, pz, e, off, backend="fjcontrib")
    c = nsubjettiness(px, py, pz, e, off, backend="numpy", chunk_size=7)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(a[k], c[k], rtol=1e-12, atol=1e-14, err_msg=k)
        assert np.all(np.isfinite(a[k]))
    np.testing.assert_allclose(
        a["tau21"], np.where(a["tau1"] > 0, a["tau2"] / np.where(a["tau1"] > 0, a["tau1"], 1), 0)
    )
    many = np.diff(off) > 3
    assert np.all(a["tau1"][many] > a["tau2"][many]) and np.all(a["tau2"][many] > a["tau3"][many])


def test_invariant_under_azimuthal_rotation_across_pi():
    rng = np.random.default_rng(5)
    px, py, pz, e, off = _random_jets(rng, 20, 5, 40)
    base = nsubjettiness(px, py, pz, e, off)
    phi0 = np.arctan2(py[off[0]], px[off[0]])
    rot = np.pi - phi0  # first particle lands on phi = pi, the jet straddles the cut
    c, s = math.cos(rot), math.sin(rot)
    rotated = nsubjettiness(c * px - s * py, s * px + c * py, pz, e, off)
    for k in base:
        np.testing.assert_allclose(base[k], rotated[k], rtol=1e-9, atol=1e-12)


def test_no_jets_and_n_max():
    empty = nsubjettiness(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), np.array([0]))
    assert all(v.shape == (0,) for v in empty.values())
    only_empty = nsubjettiness(
        np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), np.array([0, 0, 0])
    )
    np.testing.assert_array_equal(only_empty["tau21"], [0.0, 0.0])
    px, py, pz, e = _massless([1.0, 2.0, 3.0, 4.0], [0.0, 0.1, 0.2, 0.3], [0.0, 0.3, -0.2, 0.1])
    out = nsubjettiness(px, py, pz, e, np.array([0, 4]), n_max=4)
    assert set(out) == {"tau1", "tau2", "tau3", "tau4", "tau21", "tau32", "tau43"}
    assert out["tau4"][0] == 0.0


def test_bad_arguments():
    x = np.ones(2)
    with pytest.raises(ValueError, match="backend"):
        nsubjettiness(x, x, x, 2 * x, np.array([0, 2]), backend="fj")
    with pytest.raises(ValueError, match="n_max"):
        nsubjettiness(x, x, x, 2 * x, np.array([0, 2]), n_max=0)
    with pytest.raises(ValueError, match="offsets"):
        nsubjettiness(x, x, x, 2 * x, np.array([0, 3]))
