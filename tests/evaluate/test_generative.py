"""Generative metrics: hand-computed values, closed forms, and numbers from the jetnet reference code."""

import math

import numpy as np
import pytest
from scipy.stats import entropy, wasserstein_distance

from jetfm.core.errors import InputError
from jetfm.evaluate.generative import (
    JetSample,
    compare_with_floor,
    default_metrics,
    efp_available,
    evaluate_samples,
    fpd,
    frechet_distance,
    jagged_to_padded,
    jet_sample_from_batch,
    jetnet_efp_features,
    kl_quantile,
    kl_quantile_error,
    kl_quantile_table,
    kpd,
    mmd2_poly_unbiased,
    truth_floor,
    truth_floors,
    w1_batched,
    w1efp,
    w1m,
    w1p,
)


def toy_particles(seed: int, n_jets: int = 200, n_max: int = 12, width: float = 0.1):
    """Zero-padded JetNet-style jets (n_jets, n_max, [deta, dphi, pt_rel]) and their mask."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(3, n_max + 1, n_jets)
    mask = np.arange(n_max)[None, :] < counts[:, None]
    deta = rng.normal(0.0, width, (n_jets, n_max))
    dphi = rng.normal(0.0, width, (n_jets, n_max))
    pt = rng.exponential(1.0, (n_jets, n_max)) * mask
    pt = pt / pt.sum(axis=1, keepdims=True)
    return np.stack([deta, dphi, pt], axis=-1) * mask[..., None], mask


# ---------------------------------------------------------------------------------------------- KL


def test_kl_quantile_hand_value():
    # reference 0,1,2,3 in 2 quantile bins: edges (-inf, 1.5, inf) -> p = (1/2, 1/2);
    # generated 0,0,0,5 -> q = (3/4, 1/4): KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    kl = kl_quantile([0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 5.0], n_bins=2)
    assert kl == pytest.approx(0.5 * math.log(4 / 3), rel=1e-8)
    assert kl_quantile(np.arange(100.0), np.arange(100.0), n_bins=10) == pytest.approx(
        0.0, abs=1e-8
    )


def test_kl_quantile_matches_scipy_entropy_recipe():
    # OmniJet-alpha's recipe: scipy.stats.entropy(p, q + 1e-10) with quantile edges of the reference.
    rng = np.random.default_rng(3)
    ref, gen = rng.normal(0, 1, 5000), rng.normal(0.2, 1.1, 4000)
    edges = np.quantile(ref, np.linspace(0, 1, 31))
    edges[0], edges[-1] = -np.inf, np.inf
    p = np.histogram(ref, edges)[0] / len(ref)
    q = np.histogram(gen, edges)[0] / len(gen) + 1e-10
    assert kl_quantile(ref, gen, n_bins=30) == pytest.approx(entropy(p, q), rel=1e-9)
    # an empty generated bin is finite thanks to eps: gen never below the median of ref
    kl = kl_quantile(ref, np.abs(gen) + 10, n_bins=4)
    assert math.isfinite(kl) and kl > 10


def test_kl_discrete_observable_and_table():
    rng = np.random.default_rng(4)
    ref = {"n_particles": rng.poisson(30, 3000).astype(float), "mass": rng.normal(170, 20, 3000)}
    gen = {"n_particles": rng.poisson(30, 3000).astype(float), "mass": rng.normal(170, 20, 3000)}
    far = {"n_particles": rng.poisson(40, 3000).astype(float), "mass": rng.normal(120, 20, 3000)}
    same, diff = kl_quantile_table(ref, gen), kl_quantile_table(ref, far)
    assert list(same) == ["mass", "n_particles"]  # JET_OBSERVABLES order
    assert all(same[k] < 0.02 for k in same)
    assert all(diff[k] > 0.2 for k in diff)
    with pytest.raises(InputError, match="present in both"):
        kl_quantile_table(ref, gen, names=["tau21"])


def test_kl_quantile_error_is_full_value_with_bootstrap_spread():
    rng = np.random.default_rng(6)
    ref, gen = rng.normal(0, 1, 20000), rng.normal(0.3, 1, 20000)
    small = kl_quantile_error(ref[:400], gen[:400], n_bins=10, num_batches=20, seed=1)
    large = kl_quantile_error(ref, gen, n_bins=10, num_batches=20, seed=1)
    assert small[0] == kl_quantile(ref[:400], gen[:400], n_bins=10)
    assert large[0] == kl_quantile(ref, gen, n_bins=10)
    # the spread of a mean-shift KL falls like 1/sqrt(n): 50x the jets, ~7x less scatter
    assert 0 < large[1] < small[1] / 3
    assert kl_quantile_error(ref[:400], gen[:400], n_bins=10, num_batches=20, seed=1) == small
    assert math.isnan(kl_quantile_error(ref, gen, num_batches=1)[1])


# ---------------------------------------------------------------------------------------------- W1


def test_w1_batched_is_bootstrap_of_scipy():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 1000), rng.normal(0.5, 1, 800)
    mean, std = w1_batched(a, b, num_eval_samples=500, num_batches=4, seed=11)
    r = np.random.default_rng(11)
    ws = []
    for _ in range(4):
        ws.append(wasserstein_distance(a[r.choice(1000, 500)], b[r.choice(800, 500)]))
    assert (mean, std) == (pytest.approx(np.mean(ws)), pytest.approx(np.std(ws)))
    assert 0.3 < mean < 0.7  # W1 of two unit Gaussians shifted by 0.5 is 0.5
    assert w1m({"mass": a}, {"mass": a}, num_batches=2)[0] < 0.1


def test_w1p_hand_value_single_feature():
    # one feature; reference particles {1, 2}, generated {1, 4}; padded zero particles are excluded.
    x_ref = np.array([[[1.0], [2.0], [0.0]]])
    x_gen = np.array([[[4.0], [1.0], [0.0]]])
    mask = np.array([[True, True, False]])
    ref = JetSample({}, x_ref, mask, ("deta",))
    gen = JetSample({}, x_gen, mask, ("deta",))
    out = w1p(ref, gen, num_batches=3)
    # W1({1,2}, {1,4}) = (|1-1| + |2-4|) / 2 = 1
    assert out["mean"] == pytest.approx(1.0)
    assert out["std"] == pytest.approx(0.0)
    with pytest.raises(InputError, match="same particle features"):
        w1p(ref, JetSample({}, x_gen, mask, ("dphi",)))


def test_jagged_to_padded():
    values = np.array([[1.0, 10], [2, 20], [3, 30], [4, 40]])
    x, m = jagged_to_padded(values, np.array([0, 3, 3, 4]))
    assert x.shape == (3, 3, 2)
    np.testing.assert_array_equal(m, [[1, 1, 1], [0, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(x[2, 0], [4, 40])
    x2, m2 = jagged_to_padded(values, np.array([0, 3, 3, 4]), n_max=2)
    assert x2.shape == (3, 2, 2) and m2.sum() == 3


# ------------------------------------------------------------------------------------------- FPD/KPD


def test_frechet_distance_closed_forms():
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)
    # commuting (diagonal) 2-D: sum over dimensions
    fd = frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.ones(2), np.diag([4.0, 16.0]))
    assert fd == pytest.approx(2 + (1 - 2) ** 2 + (2 - 4) ** 2)
    # non-commuting: against the definition with scipy's sqrtm
    from scipy.linalg import sqrtm

    s1 = np.array([[2.0, 0.8], [0.8, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    ref = np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real)
    assert frechet_distance(np.zeros(2), s1, np.zeros(2), s2) == pytest.approx(ref, rel=1e-10)
    assert frechet_distance(np.zeros(2), s1, np.zeros(2), s1) == pytest.approx(0.0, abs=1e-12)


def test_fpd_extrapolates_to_the_gaussian_value():
    rng = np.random.default_rng(6)
    x = rng.normal(0.0, 1.0, (20000, 2))
    y = rng.normal([0.3, 0.0], [1.0, 2.0], (20000, 2))
    # no normalisation: true FD = 0.3^2 + (2 - 1)^2 = 1.09
    val, err = fpd(
        x, y, min_samples=1000, max_samples=4000, num_batches=5, num_points=4, normalise=False
    )
    assert val == pytest.approx(1.09, abs=0.05)
    assert err >= 0
    same, _ = fpd(
        x,
        rng.normal(0, 1, (20000, 2)),
        min_samples=1000,
        max_samples=4000,
        num_batches=5,
        num_points=4,
    )
    assert same < 2e-3


def test_mmd_unbiased_hand_value_and_kpd():
    # 1 feature, degree 1: k(x, y) = x y + 1 -> MMD^2 = mean_{i!=j} x_i x_j + mean_{i!=j} y_i y_j
    # - 2 mean x mean y (constants cancel). x = (1, 2), y = (0, 3): 2 + 0 - 2 * 1.5 * 1.5 = -2.5
    assert mmd2_poly_unbiased(
        np.array([[1.0], [2.0]]), np.array([[0.0], [3.0]]), degree=1
    ) == pytest.approx(-2.5)
    # chunking does not change the sums
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 1, (300, 3)), rng.normal(0.1, 1, (250, 3))
    assert mmd2_poly_unbiased(a, b, chunk=7) == pytest.approx(mmd2_poly_unbiased(a, b, chunk=1000))
    # the integer power by squaring against the plain formula, for several degrees
    for degree in range(6):
        kxx, kyy = (a @ a.T / 3 + 1) ** degree, (b @ b.T / 3 + 1) ** degree
        naive = (
            (kxx.sum() - np.trace(kxx)) / (300 * 299)
            + (kyy.sum() - np.trace(kyy)) / (250 * 249)
            - 2 * np.mean((a @ b.T / 3 + 1) ** degree)
        )
        assert mmd2_poly_unbiased(a, b, degree=degree, chunk=64) == pytest.approx(naive, abs=1e-9)
    x = rng.normal(0, 1, (3000, 3))
    same, err = kpd(x, rng.normal(0, 1, (3000, 3)), num_batches=5, batch_size=300)
    far, _ = kpd(x, rng.normal(0.5, 1, (3000, 3)), num_batches=5, batch_size=300)
    assert abs(same) < 5 * max(err, 1e-4)
    assert far > 10 * abs(same)


# ------------------------------------------------------------------------------------- EFPs, floor


@pytest.mark.skipif(not efp_available(), reason="jetfm.physics.efp not available")
def test_jetnet_efp_features_shape_and_composites():
    x, m = toy_particles(8, n_jets=20)
    s = JetSample({}, x, m)
    f = jetnet_efp_features(s)
    assert f.shape == (20, 36)
    np.testing.assert_array_equal(f[:, 0], 1.0)  # d = 0
    # column 2 is the d=1 edge EFP; the d=2 composite (two disjoint edges) is its square
    from jetfm.physics.efp import efp

    pt, eta, phi = x[..., 2][m], x[..., 0][m], x[..., 1][m]
    offsets = np.concatenate([[0], np.cumsum(m.sum(1))])
    edge = efp(pt, eta, phi, offsets, graphs=(((0, 1),),))[:, 0]
    np.testing.assert_allclose(f[:, 1], edge)
    assert np.any(np.all(np.isclose(f, (edge**2)[:, None]), axis=0))


def test_truth_floor_and_table():
    rng = np.random.default_rng(9)

    def sample(shift: float, n: int = 2000) -> JetSample:
        return JetSample({"mass": rng.normal(170 + shift, 20, n), "pt": rng.normal(600, 50, n)})

    ref, ref2, good, bad = sample(0), sample(0), sample(0), sample(15, 2500)
    kl = lambda r, g: kl_quantile(r.jets["mass"], g.jets["mass"], 20)  # noqa: E731
    floor = truth_floor(kl, ref, ref2)
    assert floor[0] < 0.02 and math.isnan(floor[1])
    rows = compare_with_floor(
        bad, ref, ref2, {"kl_mass": kl, "w1m": lambda r, g: w1m(r.jets, g.jets)}
    )
    assert [r["metric"] for r in rows] == ["kl_mass", "w1m"]
    assert all(r["n"] == 2000 for r in rows)  # all cut to the smallest sample
    by = {r["metric"]: r for r in rows}
    assert by["w1m"]["value"] == pytest.approx(15, abs=2.5)
    assert by["w1m"]["ratio"] > 5 and by["kl_mass"]["ratio"] > 5
    assert by["w1m"]["error"] > 0
    good_rows = evaluate_samples(
        good,
        ref,
        ref2,
        num_batches=2,
        fpd_kwargs={"num_batches": 3, "num_points": 3},
        kpd_kwargs={"num_batches": 3, "batch_size": 300},
    )
    names = [r["metric"] for r in good_rows]
    assert names == ["kl_pt", "kl_mass", "w1m", "fpd", "kpd"]
    assert all(r["ratio"] < 10 for r in good_rows if r["metric"].startswith("kl"))
    # more pairs of independent simulated samples: the floor is their mean, its error the
    # standard error of that mean; the first pair's floor is the one-pair floor
    pairs = [(sample(0), sample(0)) for _ in range(2)]
    kls = {"kl_mass": kl}
    many = compare_with_floor(bad, ref, ref2, kls, extra_pairs=pairs)[0]
    single = compare_with_floor(bad, ref, ref2, kls)[0]
    each = [truth_floor(kl, a, b)[0] for a, b in [(ref, ref2), *pairs]]
    assert many["floor_values"] == pytest.approx(each)
    assert many["floor_values"][0] == pytest.approx(single["floor"])
    assert many["floor"] == pytest.approx(np.mean(each))
    assert many["floor_error"] == pytest.approx(np.std(each, ddof=1) / math.sqrt(3))
    assert many["value"] == single["value"]
    # floors computed once serve several candidates, and must be at the same n
    once = truth_floors(ref, ref2, kls, len(ref), extra_pairs=pairs)
    assert compare_with_floor(bad, ref, ref2, kls, floors=once)[0] == many
    with pytest.raises(InputError, match="floors"):
        compare_with_floor(bad, ref, ref2, kls, floors=truth_floors(ref, ref2, kls, 100))
    with pytest.raises(InputError, match="extra floor pairs"):
        compare_with_floor(bad, ref, ref2, kls, extra_pairs=[(ref.head(10), ref2)])
    # a floor <= 0 (KPD, an unbiased estimate of zero) has no ratio; the table says so
    from jetfm.evaluate.generation import _rows_table

    zero = compare_with_floor(
        good, ref, ref2, {"kpd": lambda r, g: (1e-4, 1e-3) if g is good else (-1e-5, 1e-4)}
    )
    assert math.isnan(zero[0]["ratio"])
    table = "\n".join(_rows_table(zero, "t"))
    assert "| n/a |" in table and "0.1 errors from zero" in table
    assert "scatters around zero" in table

    # so has a value <= 0 over a floor > 0 (the generated jets are within the estimate's noise)
    def is_good(g: JetSample) -> bool:  # compare_with_floor passes copies cut to n jets
        return np.array_equal(g.jets["mass"], good.jets["mass"][: len(g)])

    below = compare_with_floor(
        good, ref, ref2, {"kpd": lambda r, g: (-2e-4, 1e-4) if is_good(g) else (1e-5, 1e-4)}
    )
    assert below[0]["floor"] > 0 and below[0]["value"] < 0
    assert math.isnan(below[0]["ratio"])
    table = "\n".join(_rows_table(below, "t"))
    assert "2 errors from zero" in table
    # KPD (unbiased) never gets a ratio, even with a floor and a value > 0; a KL does
    pos = compare_with_floor(good, ref, ref2, {"kpd": lambda r, g: (1e-5, 1e-4), "kl": kl})
    assert math.isnan(pos[0]["ratio"]) and pos[1]["ratio"] > 0


def test_jetsample_validation():
    with pytest.raises(InputError, match="equal length"):
        JetSample({"mass": np.zeros(3), "pt": np.zeros(4)})
    with pytest.raises(InputError, match="mask of shape"):
        JetSample({}, np.zeros((2, 3, 3)), np.zeros((2, 4), bool))
    with pytest.raises(InputError, match="NaN"):
        kl_quantile([1.0, np.nan], [1.0, 2.0])


# Reference numbers produced with jetnet 0.2.5 (jetnet.evaluation.gen_metrics, numpy 2.4.6,
# scipy 1.17.1) by tests/evaluate/jetnet_reference.py on the same toy_particles inputs, with
# jetnet's W1 generator set to default_rng(0) (= jetfm seed=0). jetfm's FPD uses an eigh-based
# matrix square root instead of scipy.linalg.sqrtm, hence the 1e-6 tolerance there.
JETNET_W1M = (0.025456994645230133, 0.0034155026907463663)
JETNET_W1P_MEANS = [0.0161062271291497, 0.01985925954614473, 0.0094165480954422]
JETNET_W1P_STDS = [0.00207905836903223, 0.00294907549665595, 0.00448113712003257]
JETNET_W1EFP_MEANS = [
    0.00120060400985034,
    0.00099798198749564,
    0.00103126060057464,
    0.00048322358439209,
    0.00078329890430106,
]
JETNET_FPD = (1.856614358865941, 1.1970026257132544)
JETNET_KPD = (0.7296181576421465, 0.5141764491224853)
JETNET_FPD_GAUSS = (0.010464223643417696, 0.00940181049683524)
JETNET_KPD_GAUSS = (0.02380533900573134, 0.0027572031718636186)


def _relative_mass(x: np.ndarray) -> np.ndarray:
    """Jet mass from massless (deta, dphi, pt_rel) particles, as jetnet.utils.jet_features does."""
    from jetfm.physics.kinematics import invariant_mass, ptetaphi_to_pxpypz

    px, py, pz = ptetaphi_to_pxpypz(x[..., 2], x[..., 0], x[..., 1])
    e = np.sqrt(px**2 + py**2 + pz**2)
    return invariant_mass(e.sum(1), px.sum(1), py.sum(1), pz.sum(1))


def test_matches_jetnet_reference_numbers():
    x1, m1 = toy_particles(1)
    x2, m2 = toy_particles(2, width=0.12)
    s1, s2 = JetSample({}, x1, m1), JetSample({}, x2, m2)
    kw = {"num_eval_samples": 150, "num_batches": 3, "seed": 0}
    w = w1m(_relative_mass(x1), _relative_mass(x2), **kw)
    np.testing.assert_allclose(w, JETNET_W1M, rtol=1e-9)
    p = w1p(s1, s2, **kw)
    np.testing.assert_allclose(p["per_feature_mean"], JETNET_W1P_MEANS, rtol=1e-9)
    np.testing.assert_allclose(p["per_feature_std"], JETNET_W1P_STDS, rtol=1e-9)
    assert p["mean"] == pytest.approx(np.mean(JETNET_W1P_MEANS))
    rng = np.random.default_rng(10)
    g1, g2 = rng.normal(0, 1, (1000, 3)), rng.normal(0.2, 1.2, (1000, 3))
    fpd_kw = {"min_samples": 200, "max_samples": 500, "num_batches": 5, "num_points": 4}
    np.testing.assert_allclose(fpd(g1, g2, **fpd_kw), JETNET_FPD_GAUSS, rtol=1e-6)
    np.testing.assert_allclose(
        kpd(g1, g2, num_batches=5, batch_size=200), JETNET_KPD_GAUSS, rtol=1e-9
    )
    if not efp_available():
        pytest.skip("jetfm.physics.efp not available: W1EFP and EFP features untested")
    e = w1efp(s1, s2, **kw)
    np.testing.assert_allclose(e["per_feature_mean"], JETNET_W1EFP_MEANS, rtol=1e-8)
    f1, f2 = jetnet_efp_features(s1), jetnet_efp_features(s2)
    fpd_kw = {"min_samples": 100, "max_samples": 200, "num_batches": 4, "num_points": 3}
    np.testing.assert_allclose(fpd(f1, f2, **fpd_kw), JETNET_FPD, rtol=1e-6)
    np.testing.assert_allclose(kpd(f1, f2, num_batches=4, batch_size=150), JETNET_KPD, rtol=1e-9)


def test_jet_sample_from_batch():
    from tests.conftest import make_toy_jets

    batch = make_toy_jets(30, seed=3)
    s = jet_sample_from_batch(batch, massless=False)
    assert len(s) == 30 and set(s.jets) == {
        "pt",
        "eta",
        "phi",
        "mass",
        "tau21",
        "tau32",
        "n_particles",
    }
    np.testing.assert_allclose(s.jets["mass"], batch.jets["mass"], rtol=1e-4)
    np.testing.assert_array_equal(s.mask.sum(axis=1), batch.counts())
    np.testing.assert_allclose(np.sum(s.feature("pt_rel") * s.mask, axis=1), 1.0, atol=0.05)
    assert np.all((s.jets["tau21"] >= 0) & (s.jets["tau21"] <= 1))
    # the sample against itself: KL = 0
    rows = compare_with_floor(
        s, s, s, {"kl": lambda r, g: kl_quantile(r.jets["mass"], g.jets["mass"])}
    )
    assert rows[0]["value"] == pytest.approx(0.0, abs=1e-9)
    if efp_available():
        # default_metrics shares cached prime EFPs between W1EFP, FPD and KPD: same numbers as the
        # stand-alone functions
        other = jet_sample_from_batch(make_toy_jets(30, seed=4), massless=False)
        m = default_metrics(s, num_batches=3, fpd_kwargs={"num_batches": 2, "num_points": 3})
        assert m["w1efp"](s, other)["mean"] == pytest.approx(
            w1efp(s, other, num_batches=3)["mean"], rel=1e-9
        )
        ref_fpd = fpd(
            jetnet_efp_features(s),
            jetnet_efp_features(other),
            min_samples=15,
            max_samples=30,
            num_batches=2,
            num_points=3,
        )
        assert m["fpd"](s, other) == pytest.approx(ref_fpd, rel=1e-9)
