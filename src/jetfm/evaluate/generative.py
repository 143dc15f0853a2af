"""Metrics for generated jets, each reported beside its truth floor.

Inputs are plain NumPy: jet-level observables as ``{name: (n_jets,) array}``; particle-level features as
padded ``(n_jets, N, F)`` arrays with a ``(n_jets, N)`` bool mask (True = real particle, the loader's
convention), bundled in :class:`JetSample`.

Metrics (definitions as published, and as the reference implementations compute them):

* **Quantile-binned KL divergence** (OmniJet-alpha, arXiv 2403.05618): bin edges are the quantiles of the
  *reference* sample (``n_bins`` equiprobable bins; outer edges at ±inf so that every generated value is
  counted); ``KL(ref || gen) = sum_i p_i ln(p_i / q_i)`` with ``p`` the reference and ``q`` the generated
  bin fractions, ``q_i += eps`` (1e-10) and ``q`` renormalised, as OmniJet-alpha's code does through
  ``scipy.stats.entropy``. Default 30 bins (OmniJet-alpha's default). Repeated quantiles (discrete
  observables such as multiplicity) are merged, which changes nothing: a zero-width bin is empty.
* **JetNet metrics** (Kansal et al., arXiv 2106.11535 and 2211.10295; reference implementation
  ``jetnet.evaluation`` 0.2.5):
  - W1M: 1-D Wasserstein-1 distance of jet mass; W1P: of each particle feature (over all real, non-zero
    particles), averaged over features; W1EFP: of the five prime EFPs with 4 vertices and 4 edges,
    averaged over EFPs. Each W1 is computed on ``num_batches`` bootstrap batches (jets drawn with
    replacement, ``num_eval_samples`` each) and reported as mean ± std (``ddof = 0``) over batches,
    as JetNet does. For the feature-averaged W1P/W1EFP the error is the std over batches of the
    feature average (JetNet returns per-feature mean and std only; per-feature values are kept too).
  - FPD: Fréchet distance between Gaussian fits (mean, covariance with ``ddof = 1``) of jet feature
    vectors, features scaled by the reference's max |value|; measured at ``num_points`` batch sizes
    spaced evenly in 1/N between ``min_samples`` and ``max_samples``, each the mean of ``num_batches``
    bootstrap batches, then fitted with ``a + b / N`` (a, b >= 0); reported as the intercept a (the
    infinite-sample value) ± its fit error.
  - KPD: unbiased MMD^2 with the polynomial kernel ``k(x, y) = (x . y / d + 1)^degree`` on the scaled
    feature vectors, on ``num_batches`` bootstrap batches; reported as median ± half the 16.275-83.725
    percentile range. ``degree`` defaults to 4 because that is what ``jetnet.evaluation.kpd`` uses
    (and hence published KPD values); KID-style cubic kernels are ``degree=3``.
  - FPD/KPD features: JetNet's recommended 36 EFPs with d <= 4 (every multigraph including composites
    and the constant d = 0 one), see :func:`jetnet_efp_features`; or any jet-level feature matrix.
  With the same ``seed`` and sample arrays, :func:`fpd` and :func:`kpd` draw exactly the batches that
  ``jetnet.evaluation.fpd``/``kpd`` draw, so they return JetNet's numbers (tested).
* **Truth floor**: a metric between two finite samples is not zero even if the generator were perfect.
  :func:`compare_with_floor` computes every metric for (reference, generated) and for (reference,
  second independent reference) on the same number of jets, and reports value, floor and ratio.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import curve_fit
from scipy.stats import iqr, wasserstein_distance

from jetfm.core.errors import InputError
from jetfm.data.schema import JetBatch

JET_OBSERVABLES: tuple[str, ...] = ("pt", "eta", "phi", "mass", "tau21", "tau32", "n_particles")
DEFAULT_PARTICLE_NAMES: tuple[str, ...] = ("deta", "dphi", "pt_rel")
KL_EPS = 1.0e-10


# --------------------------------------------------------------------------------------------------
# inputs


def _as_1d(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 1 or len(arr) == 0:
        raise InputError("a non-empty 1-D array", field=name, found=f"shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(
            "finite values", field=name, found=f"{int((~np.isfinite(arr)).sum())} NaN/inf"
        )
    return arr


@dataclass(frozen=True, eq=False)
class JetSample:
    """A set of jets for generative metrics.

    ``jets``: jet-level observables, each (n_jets,) (e.g. :data:`JET_OBSERVABLES`).
    ``particles`` (n_jets, N, F) with ``mask`` (n_jets, N) bool, feature order ``particle_names``;
    W1EFP and JetNet's EFP features need ``deta``, ``dphi`` and ``pt_rel`` (or ``pt``).
    """

    jets: Mapping[str, np.ndarray]
    particles: np.ndarray | None = None
    mask: np.ndarray | None = None
    particle_names: tuple[str, ...] = DEFAULT_PARTICLE_NAMES
    _n: int = field(init=False, repr=False, default=0)

    def __post_init__(self) -> None:
        lengths = {k: len(np.asarray(v)) for k, v in self.jets.items()}
        n = None
        if lengths:
            n = next(iter(lengths.values()))
            if any(v != n for v in lengths.values()):
                raise InputError("jet observables of equal length", field="jets", found=lengths)
        if self.particles is not None:
            x = np.asarray(self.particles)
            m = None if self.mask is None else np.asarray(self.mask)
            if x.ndim != 3 or x.shape[2] != len(self.particle_names):
                raise InputError(
                    f"particles (n_jets, N, {len(self.particle_names)}) for {self.particle_names}",
                    field="particles",
                    found=f"shape {x.shape}",
                )
            if m is None or m.shape != x.shape[:2]:
                raise InputError(
                    f"mask of shape {x.shape[:2]}",
                    field="mask",
                    found=None if m is None else f"shape {m.shape}",
                )
            if n is not None and x.shape[0] != n:
                raise InputError(f"{n} jets of particles", field="particles", found=x.shape[0])
            n = x.shape[0]
        if n is None:
            raise InputError("jet observables or particles", field="jets", found="neither")
        object.__setattr__(self, "_n", int(n))

    def __len__(self) -> int:
        return self._n

    def head(self, n: int) -> JetSample:
        """The first ``n`` jets (samples are assumed to be in random order)."""
        return JetSample(
            jets={k: np.asarray(v)[:n] for k, v in self.jets.items()},
            particles=None if self.particles is None else np.asarray(self.particles)[:n],
            mask=None if self.mask is None else np.asarray(self.mask)[:n],
            particle_names=self.particle_names,
        )

    def feature(self, name: str) -> np.ndarray:
        """Particle feature ``name`` as (n_jets, N)."""
        if self.particles is None:
            raise InputError("particle-level features", field="particles", found="None")
        if name not in self.particle_names:
            raise InputError(
                f"a particle feature among {self.particle_names}",
                field="particle_names",
                found=name,
            )
        return np.asarray(self.particles)[:, :, self.particle_names.index(name)]


def jagged_to_padded(
    values: np.ndarray, offsets: np.ndarray, n_max: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Flat per-particle values (P,) or (P, F) + offsets -> padded (J, N[, F]) and mask (J, N).

    Jets longer than ``n_max`` keep their first ``n_max`` particles (particles are stored pT-ordered).
    """
    values = np.asarray(values)
    offsets = np.asarray(offsets, dtype=np.int64)
    counts = np.diff(offsets)
    n = int(counts.max(initial=0)) if n_max is None else int(n_max)
    j = np.repeat(np.arange(len(counts)), counts)
    pos = np.arange(len(values)) - np.repeat(offsets[:-1], counts)
    keep = pos < n
    out = np.zeros((len(counts), n, *values.shape[1:]), dtype=values.dtype)
    out[j[keep], pos[keep]] = values[keep]
    mask = np.zeros((len(counts), n), dtype=bool)
    mask[j[keep], pos[keep]] = True
    return out, mask


def jet_sample_from_batch(
    batch: JetBatch,
    *,
    n_max: int | None = None,
    R: float = 0.8,
    massless: bool = True,
    with_particles: bool = True,
) -> JetSample:
    """A :class:`JetSample` from jagged jets: the :data:`JET_OBSERVABLES` and (deta, dphi, pt_rel)
    relative to the jet axis, the leading ``n_max`` particles (null: all).

    Jet pT, eta, phi, mass are recomputed from the constituents (E-scheme sum), so generated jets
    (whose stored jet fields may not exist) and simulated ones are treated alike.

    ``massless`` (default): every constituent gets ``E = |p|`` and tau21/tau32 (beta = 1,
    exclusive-kT axes, radius ``R``) are recomputed with it. Generated and tokenized jets are
    massless by construction (the kin3 features carry no particle mass), so comparing them with
    jets of massive hadrons would build in a model-independent shift: measured on the Pythia
    top/QCD sample, the massless jet mass is 7% below the stored one (median ratio 0.927). For
    generated jets this is a no-op. ``massless=False``: the stored particle energies, and the
    stored tau21/tau32 when present (else computed).
    """
    from jetfm.physics.jets import jet_four_momentum
    from jetfm.physics.observables import constituent_features, nsubjettiness

    p = batch.particles
    missing = [k for k in ("px", "py", "pz", "energy") if k not in p]
    if missing:
        raise InputError("particle four-momenta", field="particles", found=f"missing {missing}")
    px, py, pz = (np.asarray(p[k], np.float64) for k in ("px", "py", "pz"))
    e = np.sqrt(px**2 + py**2 + pz**2) if massless else np.asarray(p["energy"], np.float64)
    args = (px, py, pz, e, batch.offsets)
    j = jet_four_momentum(*args)
    jets = {k: np.asarray(j[k], dtype=np.float64) for k in ("pt", "eta", "phi", "mass")}
    if not massless and "tau21" in batch.jets and "tau32" in batch.jets:
        jets["tau21"] = np.asarray(batch.jets["tau21"], dtype=np.float64)
        jets["tau32"] = np.asarray(batch.jets["tau32"], dtype=np.float64)
    else:
        taus = nsubjettiness(*args, n_max=3, R=R)
        jets["tau21"], jets["tau32"] = taus["tau21"], taus["tau32"]
    jets["n_particles"] = np.diff(batch.offsets).astype(np.float64)
    if not with_particles:
        return JetSample(jets)
    c = constituent_features(*args)
    flat = np.stack([c["deta"], c["dphi"], c["pt_frac"]], axis=1)
    x, mask = jagged_to_padded(flat, batch.offsets, n_max)
    return JetSample(jets, x, mask, DEFAULT_PARTICLE_NAMES)


# --------------------------------------------------------------------------------------------------
# quantile-binned KL (OmniJet-alpha)


def kl_quantile(
    reference: np.ndarray, generated: np.ndarray, n_bins: int = 30, eps: float = KL_EPS
) -> float:
    """KL(reference || generated) in ``n_bins`` equiprobable bins of the reference (module docstring)."""
    ref = _as_1d(reference, "reference")
    gen = _as_1d(generated, "generated")
    if n_bins < 1:
        raise InputError("n_bins >= 1", field="n_bins", found=n_bins)
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, n_bins + 1)))
    edges = (
        np.concatenate([[-np.inf], edges[1:-1], [np.inf]]) if len(edges) > 2 else [-np.inf, np.inf]
    )
    p = np.histogram(ref, edges)[0] / len(ref)
    q = np.histogram(gen, edges)[0] / len(gen) + eps
    q = q / q.sum()
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def kl_quantile_error(
    reference: np.ndarray,
    generated: np.ndarray,
    n_bins: int = 30,
    *,
    num_batches: int = 5,
    seed: int = 0,
) -> tuple[float, float]:
    """:func:`kl_quantile` of the full samples ± the std (ddof 0) over ``num_batches`` bootstrap
    resamplings of both samples (bins re-derived each time), as the W1 metrics report theirs.

    The bootstrap spread is what a rerun with new samples of the same size would scatter by; the
    finite-sample bias of the KL itself is what the truth floor shows.
    """
    ref = _as_1d(reference, "reference")
    gen = _as_1d(generated, "generated")
    value = kl_quantile(ref, gen, n_bins)
    rng = np.random.default_rng(seed)
    boot = [
        kl_quantile(
            ref[rng.choice(len(ref), len(ref))], gen[rng.choice(len(gen), len(gen))], n_bins
        )
        for _ in range(num_batches)
    ]
    return value, float(np.std(boot)) if num_batches > 1 else math.nan


def kl_quantile_table(
    reference: Mapping[str, np.ndarray],
    generated: Mapping[str, np.ndarray],
    names: Sequence[str] | None = None,
    n_bins: int = 30,
) -> dict[str, float]:
    """:func:`kl_quantile` for each observable (default: all of :data:`JET_OBSERVABLES` present in both)."""
    if names is None:
        names = [n for n in JET_OBSERVABLES if n in reference and n in generated]
    missing = [n for n in names if n not in reference or n not in generated]
    if missing:
        raise InputError("observables present in both samples", field="names", found=missing)
    return {n: kl_quantile(reference[n], generated[n], n_bins) for n in names}


# --------------------------------------------------------------------------------------------------
# Wasserstein-1 (JetNet W1M, W1P, W1EFP)


def w1_batched(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    num_eval_samples: int | None = None,
    num_batches: int = 5,
    seed: int = 0,
) -> tuple[float, float]:
    """Mean ± std (ddof 0) of the 1-D W1 over ``num_batches`` bootstrap batches (JetNet's W1M recipe).

    ``num_eval_samples`` defaults to the smaller sample size (JetNet uses 50 000).
    """
    ref = _as_1d(reference, "reference")
    gen = _as_1d(generated, "generated")
    n = min(len(ref), len(gen)) if num_eval_samples is None else int(num_eval_samples)
    rng = np.random.default_rng(seed)
    w = []
    for _ in range(num_batches):
        a = ref[rng.choice(len(ref), size=n)]
        b = gen[rng.choice(len(gen), size=n)]
        w.append(wasserstein_distance(a, b))
    return float(np.mean(w)), float(np.std(w))


def w1m(
    reference: Mapping[str, np.ndarray] | np.ndarray,
    generated: Mapping[str, np.ndarray] | np.ndarray,
    **kwargs: Any,
) -> tuple[float, float]:
    """W1 of the jet mass (JetNet W1M): ``(mean, std)`` over bootstrap batches; kwargs as w1_batched."""
    ref = reference["mass"] if isinstance(reference, Mapping) else reference
    gen = generated["mass"] if isinstance(generated, Mapping) else generated
    return w1_batched(ref, gen, **kwargs)


def _w1_columns(
    ref_cols: Callable[[np.ndarray], np.ndarray],
    gen_cols: Callable[[np.ndarray], np.ndarray],
    n_ref: int,
    n_gen: int,
    num_eval_samples: int | None,
    num_batches: int,
    seed: int,
) -> dict[str, Any]:
    n = min(n_ref, n_gen) if num_eval_samples is None else int(num_eval_samples)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(num_batches):
        a = ref_cols(rng.choice(n_ref, size=n))  # (n_values, K)
        b = gen_cols(rng.choice(n_gen, size=n))
        if len(a) == 0 or len(b) == 0:
            rows.append(np.full(a.shape[1], np.inf))
            continue
        rows.append([wasserstein_distance(a[:, k], b[:, k]) for k in range(a.shape[1])])
    w = np.asarray(rows)  # (num_batches, K)
    avg = w.mean(axis=1)
    return {
        "mean": float(avg.mean()),
        "std": float(avg.std()),
        "per_feature_mean": w.mean(axis=0),
        "per_feature_std": w.std(axis=0),
    }


def w1p(
    reference: JetSample,
    generated: JetSample,
    *,
    num_eval_samples: int | None = None,
    num_batches: int = 5,
    seed: int = 0,
    exclude_zeros: bool = True,
) -> dict[str, Any]:
    """W1 of each particle feature over all real particles of bootstrap jet batches (JetNet W1P).

    Particles whose features are all zero are dropped when ``exclude_zeros`` (as JetNet: zero-padded
    generated particles). Returns ``mean``/``std`` of the feature-averaged W1 and ``per_feature_*``
    arrays in ``particle_names`` order.
    """
    if reference.particle_names != generated.particle_names:
        raise InputError(
            f"the same particle features {reference.particle_names}",
            field="particle_names",
            found=generated.particle_names,
        )

    def getter(s: JetSample) -> Callable[[np.ndarray], np.ndarray]:
        x = np.asarray(s.particles, dtype=np.float64)
        m = np.asarray(s.mask, dtype=bool)
        if exclude_zeros:
            m = m & (np.linalg.norm(x, axis=2) != 0)
        return lambda idx: x[idx][m[idx]]

    for s, nm in ((reference, "reference"), (generated, "generated")):
        if s.particles is None:
            raise InputError("particle-level features", field=f"{nm}.particles", found="None")
    return _w1_columns(
        getter(reference),
        getter(generated),
        len(reference),
        len(generated),
        num_eval_samples,
        num_batches,
        seed,
    )


def efp_available() -> bool:
    """Whether :mod:`jetfm.physics.efp` is importable (W1EFP and JetNet's FPD/KPD features need it)."""
    try:
        import jetfm.physics.efp  # noqa: F401
    except ImportError:
        return False
    return True


def _kinematics(s: JetSample) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flat (pt, eta, phi) of real particles + offsets, from relative or absolute coordinates."""
    pt_name = "pt_rel" if "pt_rel" in s.particle_names else "pt"
    mask = np.asarray(s.mask, dtype=bool)
    pt = s.feature(pt_name)[mask]
    eta = s.feature("deta")[mask]
    phi = s.feature("dphi")[mask]
    offsets = np.concatenate([[0], np.cumsum(mask.sum(axis=1))])
    return pt, eta, phi, offsets


def jet_efps(s: JetSample, graphs: Sequence[Any] | None = None) -> np.ndarray:
    """Prime EFPs (n_jets, n_graphs) of each jet from its ``deta, dphi, pt_rel`` particle features.

    Default graphs: JetNet's W1EFP set (n = 4 vertices, d = 4 edges, prime).
    """
    if not efp_available():
        raise InputError("jetfm.physics.efp (EFPs)", field="w1efp", found="not available")
    from jetfm.physics.efp import JETNET_W1EFP_GRAPHS, efp

    pt, eta, phi, offsets = _kinematics(s)
    return efp(pt, eta, phi, offsets, tuple(graphs) if graphs is not None else JETNET_W1EFP_GRAPHS)


def w1efp(
    reference: JetSample,
    generated: JetSample,
    *,
    num_eval_samples: int | None = None,
    num_batches: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """W1 of each of JetNet's five (n=4, d=4) EFPs, averaged over EFPs (JetNet W1EFP).

    Same return layout as :func:`w1p`. Papers quote W1EFP x 1e5.
    """
    a, b = jet_efps(reference), jet_efps(generated)
    return _w1_columns(
        lambda idx: a[idx], lambda idx: b[idx], len(a), len(b), num_eval_samples, num_batches, seed
    )


def jetnet_efp_features(s: JetSample) -> np.ndarray:
    """JetNet's recommended FPD/KPD features: the 36 EFPs with d <= 4, (n_jets, 36).

    Every multigraph with at most 4 edges: the constant d = 0 EFP (= 1), the 20 prime ones and the 15
    composites, which are products of prime EFPs because the energies are normalised. Columns are
    ordered by degree, primes before composites; FPD and KPD do not depend on the column order.
    """
    if not efp_available():
        raise InputError("jetfm.physics.efp (EFPs)", field="fpd features", found="not available")
    from jetfm.physics.efp import PRIME_GRAPHS_D4

    return _efp36(jet_efps(s, PRIME_GRAPHS_D4))


def _efp36(primes: np.ndarray) -> np.ndarray:
    """The 36 d <= 4 EFPs from the 20 prime ones (n_jets, 20) in PRIME_GRAPHS_D4 order."""
    from jetfm.physics.efp import PRIME_GRAPHS_D4

    degree = [len(g) for g in PRIME_GRAPHS_D4]
    cols = [np.ones(len(primes))]
    for d in range(1, 5):
        cols += [primes[:, i] for i in range(len(degree)) if degree[i] == d]
        for combo in _multisets(degree, d):
            if len(combo) > 1:
                cols.append(np.prod(primes[:, list(combo)], axis=1))
    return np.stack(cols, axis=1)


def _multisets(degree: Sequence[int], total: int, start: int = 0) -> list[tuple[int, ...]]:
    """All non-decreasing index tuples over ``degree`` whose degrees sum to ``total``."""
    out: list[tuple[int, ...]] = []
    for i in range(start, len(degree)):
        if degree[i] == total:
            out.append((i,))
        elif degree[i] < total:
            out += [(i, *rest) for rest in _multisets(degree, total - degree[i], i)]
    return out


# --------------------------------------------------------------------------------------------------
# FPD and KPD


def _features(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or len(arr) < 2:
        raise InputError("features (n_jets >= 2, K)", field=name, found=f"shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError("finite features", field=name, found="NaN or inf")
    return arr


def _normalise(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = np.max(np.abs(x), axis=0)
    scale[scale == 0] = 1.0
    return x / scale, y / scale


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(s1 + s2 - 2 (s1^1/2 s2 s1^1/2)^1/2)``; the symmetric form of the matrix square
    root is evaluated with eigendecompositions, so it is real and needs no regulator.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    s1, s2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise InputError(
            "matching means (K,) and covariances (K, K)",
            field="gaussians",
            found=f"{mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}",
        )
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = root1 @ s2 @ root1
    tr_cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_cross)


def _linear(x: np.ndarray, intercept: float, slope: float) -> np.ndarray:
    return intercept + slope * x


def fpd(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    min_samples: int = 20_000,
    max_samples: int = 50_000,
    num_batches: int = 20,
    num_points: int = 10,
    normalise: bool = True,
    seed: int = 42,
) -> tuple[float, float]:
    """Fréchet physics distance extrapolated to infinite sample size: ``(value, error)``.

    ``reference``/``generated`` are (n_jets, K) feature matrices. Defaults are JetNet's (they assume
    >= 50 000 jets; pass smaller ``min_samples``/``max_samples`` for small samples).
    """
    x, y = _features(reference, "reference"), _features(generated, "generated")
    if x.shape[1] != y.shape[1]:
        raise InputError(f"{x.shape[1]} features", field="generated", found=y.shape[1])
    if not 2 <= min_samples <= max_samples or num_points < 2:
        raise InputError(
            "2 <= min_samples <= max_samples and num_points >= 2",
            field="fpd",
            found=(min_samples, max_samples, num_points),
        )
    if normalise:
        x, y = _normalise(x, y)
    sizes = (1 / np.linspace(1.0 / min_samples, 1.0 / max_samples, num_points)).astype("int32")
    rng = np.random.default_rng(seed)
    vals = []
    for n in sizes:
        per = []
        for _ in range(num_batches):
            a = x[rng.choice(len(x), size=n)]
            b = y[rng.choice(len(y), size=n)]
            per.append(
                frechet_distance(
                    a.mean(axis=0),
                    np.cov(a, rowvar=False),
                    b.mean(axis=0),
                    np.cov(b, rowvar=False),
                )
            )
        vals.append(np.mean(per))
    params, cov = curve_fit(_linear, 1.0 / sizes, vals, bounds=([0, 0], [np.inf, np.inf]))
    return float(params[0]), float(np.sqrt(cov[0, 0]))


def _kernel_sum(a: np.ndarray, b: np.ndarray, gamma: float, degree: int, chunk: int) -> float:
    """sum_ij (a_i . b_j gamma + 1)^degree, in row chunks, integer power by repeated squaring."""
    total = 0.0
    for i in range(0, len(a), chunk):
        k = a[i : i + chunk] @ b.T  # (chunk, len(b))
        k *= gamma
        k += 1.0
        out = None
        base, e = k, degree
        while e:
            if e & 1:
                out = base.copy() if out is None else np.multiply(out, base, out=out)
            e >>= 1
            if e:
                base = base * base if base is k else np.multiply(base, base, out=base)
        total += float(np.sum(out)) if out is not None else float(k.size)
    return total


def mmd2_poly_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 4, chunk: int = 1024) -> float:
    """Unbiased MMD^2 with kernel ``(x . y / d + 1)^degree`` (d = number of features).

    Kernel sums are accumulated in row chunks so that 5000-jet batches need no 5000 x 5000 matrices.
    """
    x, y = _features(x, "x"), _features(y, "y")
    if degree < 0 or int(degree) != degree:
        raise InputError("a non-negative integer degree", field="degree", found=degree)
    degree = int(degree)
    gamma = 1.0 / x.shape[1]

    def kdiag(a: np.ndarray) -> float:
        return float(np.sum((np.einsum("ij,ij->i", a, a) * gamma + 1.0) ** degree))

    m, n = len(x), len(y)
    return (
        (_kernel_sum(x, x, gamma, degree, chunk) - kdiag(x)) / (m * (m - 1))
        + (_kernel_sum(y, y, gamma, degree, chunk) - kdiag(y)) / (n * (n - 1))
        - 2.0 * _kernel_sum(x, y, gamma, degree, chunk) / (m * n)
    )


def kpd(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    num_batches: int = 10,
    batch_size: int = 5_000,
    normalise: bool = True,
    seed: int = 42,
    degree: int = 4,
) -> tuple[float, float]:
    """Kernel physics distance: ``(median, error)`` of unbiased MMD^2 over bootstrap batches.

    Error = half the 16.275-83.725 percentile range (JetNet). Batch ``i`` uses
    ``default_rng(seed + 1000 i)`` as JetNet does.
    """
    x, y = _features(reference, "reference"), _features(generated, "generated")
    if x.shape[1] != y.shape[1]:
        raise InputError(f"{x.shape[1]} features", field="generated", found=y.shape[1])
    if normalise:
        x, y = _normalise(x, y)
    vals = []
    for i in range(num_batches):
        rng = np.random.default_rng(seed + i * 1000)
        a = x[rng.choice(len(x), size=batch_size)]
        b = y[rng.choice(len(y), size=batch_size)]
        vals.append(mmd2_poly_unbiased(a, b, degree=degree))
    return float(np.median(vals)), float(iqr(vals, rng=(16.275, 83.725)) / 2)


def jet_feature_matrix(jets: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """Stack jet observables into an (n_jets, K) matrix (FPD/KPD on jet-level observables)."""
    missing = [n for n in names if n not in jets]
    if missing:
        raise InputError(f"jet observables {list(names)}", field="jets", found=f"missing {missing}")
    return np.stack([np.asarray(jets[n], dtype=np.float64) for n in names], axis=1)


# --------------------------------------------------------------------------------------------------
# truth floor


MetricFn = Callable[[JetSample, JetSample], "float | tuple[float, float]"]


def _value_error(out: Any) -> tuple[float, float]:
    if isinstance(out, Mapping):
        return float(out["mean"]), float(out["std"])
    if isinstance(out, tuple):
        return float(out[0]), float(out[1])
    return float(out), math.nan


def truth_floor(
    metric_fn: MetricFn, sample_a: JetSample, sample_b: JetSample
) -> tuple[float, float]:
    """The metric between two independent reference samples: what a perfect generator would score.

    Both samples are cut to the same number of jets. Returns ``(value, error)`` (error NaN when the
    metric has none).
    """
    n = min(len(sample_a), len(sample_b))
    return _value_error(metric_fn(sample_a.head(n), sample_b.head(n)))


#: metrics whose estimate is unbiased around zero for identical samples: no value / floor ratio
UNBIASED_METRICS: frozenset[str] = frozenset({"kpd"})


def truth_floors(
    reference: JetSample,
    reference2: JetSample,
    metrics: Mapping[str, MetricFn],
    n: int,
    *,
    extra_pairs: Sequence[tuple[JetSample, JetSample]] = (),
) -> dict[str, dict[str, Any]]:
    """Each metric's truth floor at ``n`` jets per sample: ``{name: {floor, floor_error,
    floor_values, n}}``, from ``reference`` vs ``reference2`` and any ``extra_pairs``.

    The floor of one pair is itself one draw of a noisy quantity: for a KL in 30 quantile bins of
    8,000 jets, two independent samples of one continuous distribution give 0.0036 +- 0.0010
    (29/8000 on average; measured over 400 pairs of normal samples), so a single floor can sit 2x
    below its mean. ``extra_pairs``: further pairs of independent simulated samples (each of at
    least ``n`` jets, independent of the first pair too); the floor is then the mean over all
    pairs and its error the standard error of that mean (else the metric's own error).
    """
    pairs = [(reference, reference2), *extra_pairs]
    short = [min(len(a), len(b)) for a, b in pairs if min(len(a), len(b)) < n]
    if short:
        raise InputError(
            f"reference and extra floor pairs of at least {n} jets each",
            field="extra_pairs",
            found=short,
        )
    pairs = [(a.head(n), b.head(n)) for a, b in pairs]
    out = {}
    for name, fn in metrics.items():
        floors = [truth_floor(fn, a, b) for a, b in pairs]
        values = [f for f, _ in floors]
        f, fe = floors[0]
        if len(values) > 1:
            f = float(np.mean(values))
            fe = float(np.std(values, ddof=1) / math.sqrt(len(values)))
        out[name] = {"floor": f, "floor_error": fe, "floor_values": values, "n": n}
    return out


def compare_with_floor(
    generated: JetSample,
    reference: JetSample,
    reference2: JetSample,
    metrics: Mapping[str, MetricFn],
    *,
    extra_pairs: Sequence[tuple[JetSample, JetSample]] = (),
    unbiased: Collection[str] = UNBIASED_METRICS,
    floors: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per metric: ``metric, value, error, floor, floor_error, ratio`` (ratio = value / floor,
    NaN where the floor or the value is <= 0, and for the ``unbiased`` metrics), plus
    ``floor_values`` (one per pair of simulated samples, see :func:`truth_floors`).

    An unbiased estimate of a distance that is zero between identical distributions (KPD's
    unbiased MMD^2) scatters around zero between two simulated samples: its floor is noise, so
    value / floor means nothing and the value is judged by its error instead.

    Every metric is called as ``fn(reference, candidate)`` with all samples cut to the same
    number of jets ``n`` (recorded in each row), so value and floor see equal statistics.
    ``floors``: :func:`truth_floors` of these references at the same ``n``, computed once for
    several candidates (else computed here, with ``extra_pairs``).
    """
    n = min(len(generated), len(reference), len(reference2))
    if floors is None:
        floors = truth_floors(reference, reference2, metrics, n, extra_pairs=extra_pairs)
    stale = sorted(k for k in metrics if k not in floors or floors[k]["n"] != n)
    if stale:
        raise InputError(f"floors of every metric at n = {n} jets", field="floors", found=stale)
    gen, ref = generated.head(n), reference.head(n)
    rows = []
    for name, fn in metrics.items():
        v, e = _value_error(fn(ref, gen))
        fl = floors[name]
        f = fl["floor"]
        # a floor or value <= 0 (an unbiased estimate such as KPD's, of a distance that is zero
        # between identical distributions) has no meaningful ratio: judge the value by its error
        ratio = v / f if f > 0 and v >= 0 and name not in unbiased else math.nan
        rows.append(
            {
                "metric": name,
                "value": v,
                "error": e,
                "floor": f,
                "floor_error": fl["floor_error"],
                "ratio": ratio,
                "n": n,
                "floor_values": list(fl["floor_values"]),
            }
        )
    return rows


def default_metrics(
    sample: JetSample,
    *,
    n_bins: int = 30,
    num_batches: int = 5,
    seed: int = 0,
    fpd_kwargs: Mapping[str, Any] | None = None,
    kpd_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, MetricFn]:
    """The standard set of metrics applicable to samples shaped like ``sample``.

    KL per jet observable (``kl_<name>``); ``w1m`` if jet mass is present; ``w1p`` if particles are;
    ``w1efp``, ``fpd``, ``kpd`` on JetNet's 36 EFPs if particles with deta/dphi/pt_rel and
    :mod:`jetfm.physics.efp` are available, else ``fpd``/``kpd`` on the jet observables. FPD/KPD batch
    sizes default to what a small sample allows (min n/2 .. n, KPD batches of min(n, 5000)).
    """
    n = len(sample)
    out: dict[str, MetricFn] = {}
    for obs in (o for o in JET_OBSERVABLES if o in sample.jets):
        out[f"kl_{obs}"] = lambda r, g, obs=obs: kl_quantile_error(
            r.jets[obs], g.jets[obs], n_bins, num_batches=num_batches, seed=seed
        )
    if "mass" in sample.jets:
        out["w1m"] = lambda r, g: w1m(r.jets, g.jets, num_batches=num_batches, seed=seed)
    has_kin = sample.particles is not None and {"deta", "dphi"} <= set(sample.particle_names)
    has_kin = has_kin and bool({"pt_rel", "pt"} & set(sample.particle_names))
    if sample.particles is not None:
        out["w1p"] = lambda r, g: w1p(r, g, num_batches=num_batches, seed=seed)
    fk = {"min_samples": max(2, n // 2), "max_samples": max(2, n), **(fpd_kwargs or {})}
    kk = {"batch_size": min(n, 5000), **(kpd_kwargs or {})}
    # Features are computed once per sample object (EFPs are the expensive part) and shared by
    # W1EFP, FPD and KPD; the cache keeps the sample alive so that its id cannot be reused.
    cache: dict[tuple[str, int], tuple[JetSample, np.ndarray]] = {}

    def cached(kind: str, s: JetSample, compute: Callable[[JetSample], np.ndarray]) -> np.ndarray:
        if (kind, id(s)) not in cache:
            cache[(kind, id(s))] = (s, compute(s))
        return cache[(kind, id(s))][1]

    if has_kin and efp_available():
        from jetfm.physics.efp import JETNET_W1EFP_GRAPHS, PRIME_GRAPHS_D4

        cols = [PRIME_GRAPHS_D4.index(g) for g in JETNET_W1EFP_GRAPHS]

        def primes(s: JetSample) -> np.ndarray:
            return cached("primes", s, lambda t: jet_efps(t, PRIME_GRAPHS_D4))

        def w1efp_cached(r: JetSample, g: JetSample) -> dict[str, Any]:
            a, b = primes(r)[:, cols], primes(g)[:, cols]
            return _w1_columns(
                lambda i: a[i], lambda i: b[i], len(a), len(b), None, num_batches, seed
            )

        out["w1efp"] = w1efp_cached

        def feats(s: JetSample) -> np.ndarray:
            return cached("efp36", s, lambda t: _efp36(primes(t)))

    else:
        names = [o for o in JET_OBSERVABLES if o in sample.jets]
        if not names:
            return out

        def feats(s: JetSample) -> np.ndarray:
            return cached("jet", s, lambda t: jet_feature_matrix(t.jets, names))

    out["fpd"] = lambda r, g: fpd(feats(r), feats(g), **fk)
    out["kpd"] = lambda r, g: kpd(feats(r), feats(g), **kk)
    return out


def evaluate_samples(
    generated: JetSample,
    reference: JetSample,
    reference2: JetSample,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """:func:`compare_with_floor` with :func:`default_metrics` (kwargs go to default_metrics)."""
    n = min(len(generated), len(reference), len(reference2))
    return compare_with_floor(
        generated, reference, reference2, default_metrics(reference.head(n), **kwargs)
    )
