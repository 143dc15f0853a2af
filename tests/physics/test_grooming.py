"""Soft-drop grooming: hand-computed jets, edge cases, and agreement with FastJet + fjcontrib."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from jetfm.core.errors import InputError
from jetfm.physics.grooming import SOFTDROP_FIELDS, softdrop
from jetfm.physics.jets import jet_four_momentum
from jetfm.physics.kinematics import invariant_mass

BACKENDS = ("numpy", "fastjet")
REAL_QG = Path(__file__).parents[2].parent / "shared/data/qg_real_sample"
PION = 0.13957


def _particles(pt, y, phi, m=None):
    """Four-vectors from (pT, rapidity, phi, mass): E = mT cosh y, pz = mT sinh y."""
    pt, y, phi = (np.asarray(a, dtype=np.float64) for a in (pt, y, phi))
    m = np.zeros_like(pt) if m is None else np.asarray(m, dtype=np.float64)
    mt = np.sqrt(pt * pt + m * m)
    return pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y), mt * np.cosh(y)


def _jets(*jets):
    """Flat arrays + offsets from a list of (pt, y, phi[, m]) tuples (one per jet; () = empty jet)."""
    parts = [_particles(*j) if j else (np.zeros(0),) * 4 for j in jets]
    flat = [np.concatenate([p[k] for p in parts]) for k in range(4)]
    counts = [len(p[0]) for p in parts]
    return (*flat, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))


def _run(args, backend, **kw):
    if backend == "fastjet":
        pytest.importorskip("fastjet")
    return softdrop(*args, backend=backend, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_prongs_and_a_soft_wide_angle_particle(backend):
    # Prongs A (300 GeV, phi 0) and B (200 GeV, phi 0.5) at rapidity 0.3; soft C (1 GeV) at dR 0.7
    # from A on the other side. C/A merges A+B (dR 0.5) first, then C (dR ~0.9 to A+B).
    # Top declustering: z = 1/501 < 0.1 -> drop C. Next: z = 200/500 = 0.4 > 0.1 -> stop.
    args = _jets(([300.0, 200.0, 1.0], [0.3, 0.3, 0.3], [0.0, 0.5, -0.7]))
    out = _run(args, backend)
    m_ab = math.sqrt(2 * 300.0 * 200.0 * (1 - math.cos(0.5)))  # massless, same rapidity
    pt_ab = math.sqrt(300.0**2 + 200.0**2 + 2 * 300.0 * 200.0 * math.cos(0.5))
    np.testing.assert_allclose(out["mass_sd"], [m_ab], rtol=1e-12)
    np.testing.assert_allclose(out["pt_sd"], [pt_ab], rtol=1e-12)
    np.testing.assert_allclose(out["rg"], [0.5], rtol=1e-12)
    np.testing.assert_allclose(out["zg"], [0.4], rtol=1e-12)
    np.testing.assert_array_equal(out["n_sd"], [2])
    ungroomed = jet_four_momentum(*args)["mass"][0]
    assert ungroomed > m_ab + 1.0  # the 1 GeV wide-angle particle adds ~1.6 GeV of mass
    assert set(out) == set(SOFTDROP_FIELDS)
    assert out["n_sd"].dtype == np.int64 and out["mass_sd"].dtype == np.float64


@pytest.mark.parametrize("backend", BACKENDS)
def test_everything_fails_ends_as_the_hardest_particle(backend):
    # 100 GeV pion at phi 0, 3 GeV at phi 0.1, 2 GeV at phi 0.4 (massless). C/A: (100 + 3), then + 2.
    # z = 2/105 and then 3/103, both < 0.1: the groomed jet is the pion alone.
    args = _jets(([100.0, 3.0, 2.0], [0.0, 0.0, 0.0], [0.0, 0.1, 0.4], [PION, 0.0, 0.0]))
    out = _run(args, backend)
    np.testing.assert_allclose(out["mass_sd"], [PION], rtol=1e-9)
    np.testing.assert_allclose(out["pt_sd"], [100.0], rtol=1e-12)
    np.testing.assert_array_equal(out["n_sd"], [1])
    np.testing.assert_array_equal(out["rg"], [0.0])
    np.testing.assert_array_equal(out["zg"], [0.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_beta_loosens_the_cut_at_small_angle(backend):
    # Two massless particles, 95 and 5 GeV, dR = 0.2: z = 0.05.
    # beta = 0: 0.05 < 0.1 fails -> one particle.  beta = 1: cut = 0.1 * 0.2 / 0.8 = 0.025 -> kept.
    # beta = 1, R0 = 0.1: cut = 0.1 * 2 = 0.2 -> fails again.
    args = _jets(([95.0, 5.0], [0.0, 0.0], [1.0, 1.2]))
    m_pair = math.sqrt(2 * 95.0 * 5.0 * (1 - math.cos(0.2)))
    assert _run(args, backend, beta=0.0)["mass_sd"][0] == pytest.approx(0.0, abs=1e-6)
    out = _run(args, backend, beta=1.0)
    np.testing.assert_allclose(out["mass_sd"], [m_pair], rtol=1e-9)
    np.testing.assert_allclose(out["rg"], [0.2], rtol=1e-12)
    np.testing.assert_allclose(out["zg"], [0.05], rtol=1e-12)
    np.testing.assert_array_equal(out["n_sd"], [2])
    assert _run(args, backend, beta=1.0, R0=0.1)["n_sd"][0] == 1
    # zcut = 0.04 < z passes even with beta = 0
    assert _run(args, backend, zcut=0.04)["mass_sd"][0] == pytest.approx(m_pair, rel=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_phi_wraparound(backend):
    # Same two prongs as above but straddling phi = +-pi: dR must be 0.5, not 2 pi - 0.5.
    args = _jets(([300.0, 200.0], [-1.1, -1.1], [math.pi - 0.2, -math.pi + 0.3]))
    out = _run(args, backend)
    np.testing.assert_allclose(out["rg"], [0.5], rtol=1e-9)
    np.testing.assert_allclose(
        out["mass_sd"], [math.sqrt(2 * 300.0 * 200.0 * (1 - math.cos(0.5)))], rtol=1e-9
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_zero_padded_jets_give_zeros_not_nan(backend):
    one = ([7.0], [0.3], [1.0], [PION])
    args = _jets((), one, (), ([300.0, 200.0], [0.0, 0.0], [0.0, 0.5]), ())
    out = _run(args, backend)
    for k in SOFTDROP_FIELDS:
        assert np.all(np.isfinite(out[k])), k
        assert out[k][0] == 0 and out[k][2] == 0 and out[k][4] == 0, k
    np.testing.assert_allclose(out["mass_sd"][1], PION, rtol=1e-9)
    assert out["n_sd"][1] == 1 and out["rg"][1] == 0.0
    # Zero four-vectors (padding inside a jet, or a jet of padding only) change nothing.
    px, py, pz, e, off = args
    counts = np.diff(off)
    pad = np.array([2, 0, 1, 3, 0])  # zero particles appended to each jet
    new_counts = counts + pad
    new_off = np.concatenate([[0], np.cumsum(new_counts)])
    padded = [np.zeros(new_off[-1]) for _ in range(4)]
    dst = np.concatenate([np.arange(new_off[i], new_off[i] + counts[i]) for i in range(5)])
    for arr, src in zip(padded, (px, py, pz, e), strict=True):
        arr[dst] = src
    out_pad = _run((*padded, new_off), backend)
    for k in SOFTDROP_FIELDS:
        np.testing.assert_array_equal(out_pad[k], out[k], err_msg=k)


def test_no_jets():
    out = softdrop(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), np.array([0]))
    assert all(len(out[k]) == 0 for k in SOFTDROP_FIELDS)


@pytest.fixture(scope="module")
def w_jets():
    """24 Pythia 8 W -> qq' jets (anti-kT R = 0.8, pT 500-1000 GeV, MPI + ISR on); ~1.5 s."""
    pytest.importorskip("pythia8mc")
    from jetfm.data.simulate import SimulationConfig, generate_jets

    cfg = SimulationConfig(classes=["Wqq"], jets_per_class=24, output=Path("unused"))
    batch, _ = generate_jets(cfg, "Wqq", 24, seed=7)
    p4 = (np.asarray(batch.particles[k], dtype=np.float64) for k in ("px", "py", "pz", "energy"))
    return (*p4, np.asarray(batch.offsets, dtype=np.int64))


@pytest.mark.parametrize(("zcut", "beta"), [(0.1, 0.0), (0.1, 1.0), (0.2, 2.0)])
def test_backends_agree_on_pythia_w_jets(w_jets, zcut, beta):
    pytest.importorskip("fastjet")
    a = softdrop(*w_jets, zcut=zcut, beta=beta)
    b = softdrop(*w_jets, zcut=zcut, beta=beta, backend="fastjet")
    np.testing.assert_allclose(a["mass_sd"], b["mass_sd"], rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(a["pt_sd"], b["pt_sd"], rtol=1e-12)
    np.testing.assert_allclose(a["rg"], b["rg"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a["zg"], b["zg"], rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(a["n_sd"], b["n_sd"])
    n = np.diff(w_jets[4])
    assert np.all((a["n_sd"] >= 1) & (a["n_sd"] <= n)) and np.any(a["n_sd"] < n)


def test_grooming_moves_the_w_peak_to_the_pole(w_jets):
    out = softdrop(*w_jets)
    m = jet_four_momentum(*w_jets)["mass"]
    # A subset of future-pointing four-vectors never has more mass than the whole jet.
    assert np.all(out["mass_sd"] <= m + 1e-6)
    med_sd, med = np.median(out["mass_sd"]), np.median(m)
    assert abs(med_sd - 80.4) < 6.0  # measured: 80.8 GeV (ungroomed 89.5) for this seed
    assert med > med_sd + 3.0


def test_backends_agree_on_real_quark_gluon_jets():
    pytest.importorskip("fastjet")
    if not REAL_QG.exists():
        pytest.skip(f"{REAL_QG} not present")
    vec = np.load(REAL_QG / "pf_vectors.npy")[:60].astype(np.float64)  # (60, 4, 128)
    mask = np.load(REAL_QG / "pf_mask.npy")[:60, 0] > 0  # (60, 128)
    args = tuple(vec[:, k][mask] for k in range(4))
    off = np.concatenate([[0], np.cumsum(mask.sum(1))])
    a = softdrop(*args, off, R0=0.4)
    b = softdrop(*args, off, R0=0.4, backend="fastjet")
    for k in SOFTDROP_FIELDS:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-6, err_msg=k)


def test_permuting_particles_changes_nothing(w_jets):
    px, py, pz, e, off = w_jets
    rng = np.random.default_rng(3)
    perm = np.concatenate(
        [off[i] + rng.permutation(off[i + 1] - off[i]) for i in range(len(off) - 1)]
    )
    a = softdrop(px, py, pz, e, off, beta=1.0)
    b = softdrop(px[perm], py[perm], pz[perm], e[perm], off, beta=1.0)
    for k in SOFTDROP_FIELDS:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-9, err_msg=k)


def test_chunking_and_jet_order_do_not_matter(w_jets):
    px, py, pz, e, off = w_jets
    whole = softdrop(px, py, pz, e, off)
    chunked = softdrop(px, py, pz, e, off, chunk_size=5)
    for k in SOFTDROP_FIELDS:
        np.testing.assert_array_equal(chunked[k], whole[k], err_msg=k)
    # groomed mass of each jet alone is the same as in the batch
    for i in (0, 7):
        sl = slice(off[i], off[i + 1])
        alone = softdrop(px[sl], py[sl], pz[sl], e[sl], np.array([0, off[i + 1] - off[i]]))
        assert alone["mass_sd"][0] == whole["mass_sd"][i]


def test_single_particle_mass_matches_kinematics():
    args = _jets(([50.0], [1.2], [2.0], [0.938]))
    out = softdrop(*args)
    assert out["mass_sd"][0] == pytest.approx(invariant_mass(args[3], *args[:3])[0], rel=1e-12)


_ARG = {"px": 0, "energy": 3, "offsets": 4}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("offsets", np.array([0, 3])),  # does not end at the number of particles
        ("offsets", np.array([0, 2, 1, 2])),  # decreasing
        ("offsets", np.array([1, 2])),  # does not start at 0
        ("offsets", np.array([0.0, 2.0])),  # not integers
        ("px", np.array([300.0])),  # length differs from the others
        ("energy", np.array([np.nan, 1.0])),
        ("zcut", -0.1),
        ("zcut", float("nan")),
        ("beta", float("inf")),
        ("R0", 0.0),
        ("chunk_size", 0),
        ("backend", "fjcontrib"),
    ],
)
def test_bad_input_names_the_field(name, value):
    args = list(_jets(([300.0, 200.0], [0.0, 0.0], [0.0, 0.5])))
    kw = {}
    if name in _ARG:
        args[_ARG[name]] = value
    else:
        kw[name] = value
    with pytest.raises(InputError) as err:
        softdrop(*args, **kw)
    assert err.value.field == name
    assert f"'{name}'" in str(err.value)
