"""Classifier-based refinement of generated jets: keep each jet with a probability from a
data-vs-generated classifier (rejection sampling with density-ratio weights).

Why: a generator that is close, but not exactly right, can be corrected after the fact by a
classifier that learns where it over- and under-populates phase space. A classifier ``D(x)`` trained
to tell simulated jets (label 1) from generated ones (label 0), with balanced classes, estimates the
density ratio ``w(x) = p_sim(x) / p_gen(x) = D(x) / (1 - D(x))``. This is the DCTR reweighting of
Andreassen and Nachman (arXiv 1907.08209) applied to a generator as in DCTRGAN (Diefenbacher et al.,
arXiv 2009.03796), and, turned into unweighted jets by accepting each candidate with probability
``min(1, w / w_max)``, discriminator rejection sampling (Azadi et al., arXiv 1810.06758). The kept
jets are a sample of ``p_gen * w``: of the simulation, as far as the classifier can tell.

**What it is not.** The refined sample is the output of *generator + classifier*, not of the
generator alone; the classifier is trained on simulated jets (the generator's own training split,
never the split the metrics use), so metrics of refined jets must be reported as such, next to those
of the raw generator. It cannot create jets the generator never makes: where ``p_gen`` is tiny, the
pool has no candidates and the weights there are clipped (``max_weight_quantile``).

**Pools.** The generated store is a pool. A seeded random ``train_fraction`` of it (per class)
trains the classifier together with as many simulated jets; those generated jets are never kept.
The rest are candidates: each gets its weight, a uniform draw decides, and the first ``n_jets``
accepted (in a seeded random order, classes in the pool's proportions) form the refined store.
A quarter of the classifier's jets is held out to report its ROC AUC (0.5: it cannot tell them
apart, the refinement can do little; well above: the generator is visibly off).

**Features** (per jet, from massless constituents like :func:`jet_sample_from_batch`):

- ``particles``: for the 8 highest-pT particles, their distance to the jet axis ``dR`` and
  ``log pT_rel``; the pairwise ``dR`` of the 4 leading ones; mean and standard deviation of ``dR``
  and ``log pT_rel`` over the jet. Rotation and reflection invariant. No jet observable.
- ``observables``: the jet observables the generation metrics judge (pT, mass, tau21, tau32,
  multiplicity). With them the classifier targets exactly what the KL table scores, so a refined
  sample built with them says little about everything else: prefer ``[particles]`` and let
  ``observables`` show the ceiling.

The classifier is scikit-learn's histogram gradient-boosted trees (fast on a CPU, no tuning, handles
missing leading particles as NaN). Shapes: B jets, N particles.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jetfm.core.atomic import write_json_atomic
from jetfm.core.config import to_dict
from jetfm.core.errors import ConfigError, InputError
from jetfm.core.rounding import largest_remainder
from jetfm.data.schema import JetBatch
from jetfm.data.store import MANIFEST, Store, finalize_store, write_shard
from jetfm.evaluate.generative import jet_sample_from_batch
from jetfm.evaluate.sampling import UNCONDITIONAL_CLASSES

REFINE_JSON = "refine.json"
FEATURE_GROUPS = ("particles", "observables")
N_LEADING = 8  # particles whose (dR, log pT_rel) are features
N_PAIRS = 4  # leading particles whose pairwise dR are features


@dataclass
class RefineConfig:
    """``jetfm refine``: keep generated jets with probability ``min(1, w / w_max)``.

    ``generated``: the pool (a ``jetfm sample`` store). ``reference``/``split``: simulated jets the
    classifier learns from (the generator's training split; never the split the metrics use).
    ``n_jets``: jets to keep (null: as many as every class's accepted jets allow, in the pool's
    class proportions). ``features``: groups among
    ``particles`` and ``observables`` (see the module docstring). ``max_weight_quantile``: ``w_max``
    is this quantile of the candidates' weights (1.0: their maximum, exact but wasteful; below 1 the
    heaviest weights are clipped, a small bias for many more kept jets).
    """

    generated: Path = Path("data/generated")
    reference: Path = Path("data/default")
    output: Path = Path("data/refined")
    split: str = "train"
    n_jets: int | None = None
    features: list[str] = field(default_factory=lambda: ["particles"])
    train_fraction: float = 0.5
    max_weight_quantile: float = 0.99
    max_iter: int = 300  # boosting rounds at most (early stopping on 10% of the training jets)
    seed: int = 0
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.generated, self.reference, self.output = (
            Path(self.generated),
            Path(self.reference),
            Path(self.output),
        )
        self.features = list(self.features)
        bad = [f for f in self.features if f not in FEATURE_GROUPS]
        if not self.features or bad:
            raise ConfigError(
                f"a non-empty list of {list(FEATURE_GROUPS)}", field="features", found=self.features
            )
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError(
                "a number in (0, 1)", field="train_fraction", found=self.train_fraction
            )
        if not 0.0 < self.max_weight_quantile <= 1.0:
            raise ConfigError(
                "a number in (0, 1]", field="max_weight_quantile", found=self.max_weight_quantile
            )
        if self.n_jets is not None and self.n_jets < 1:
            raise ConfigError("n_jets >= 1 or null", field="n_jets", found=self.n_jets)
        if self.max_iter < 1:
            raise ConfigError("max_iter >= 1", field="max_iter", found=self.max_iter)


# ================================================================================= features
def refine_features(
    batch: JetBatch, groups: list[str] | tuple[str, ...], *, jet_radius: float = 0.8
) -> tuple[np.ndarray, list[str]]:
    """Per-jet classifier inputs (B, n_features) and their names; NaN where a jet has too few
    particles (the trees send missing values their own way)."""
    s = jet_sample_from_batch(batch, R=jet_radius, massless=True)
    cols: list[np.ndarray] = []
    names: list[str] = []
    if "particles" in groups:
        x = np.asarray(s.particles, np.float64)  # (B, N, 3): deta, dphi, pt_rel
        m = np.asarray(s.mask, bool)  # (B, N)
        b, n = m.shape
        pt = np.where(m, x[..., 2], -np.inf)
        order = np.argsort(-pt, axis=1, kind="stable")  # (B, N) highest pT first
        xs = np.take_along_axis(x, order[..., None], axis=1)
        ms = np.take_along_axis(m, order, axis=1)
        dr = np.hypot(xs[..., 0], xs[..., 1])  # (B, N) distance to the jet axis
        logpt = np.log(np.maximum(xs[..., 2], 1e-12))  # (B, N)
        for k in range(N_LEADING):
            has = ms[:, k] if k < n else np.zeros(b, bool)
            for nm, v in (("dR", dr), ("log_pt_rel", logpt)):
                col = v[:, k] if k < n else np.zeros(b)
                cols.append(np.where(has, col, np.nan))
                names.append(f"p{k}_{nm}")
        for i in range(N_PAIRS):
            for j in range(i + 1, N_PAIRS):
                if j < n:
                    d = np.hypot(xs[:, i, 0] - xs[:, j, 0], xs[:, i, 1] - xs[:, j, 1])
                    d = np.where(ms[:, j], d, np.nan)
                else:
                    d = np.full(b, np.nan)
                cols.append(d)
                names.append(f"dR_p{i}p{j}")
        cnt = np.maximum(ms.sum(axis=1), 1)  # (B,)
        for nm, v in (("dR", dr), ("log_pt_rel", logpt)):
            vm = np.where(ms, v, 0.0)
            mean = vm.sum(axis=1) / cnt
            var = np.where(ms, (v - mean[:, None]) ** 2, 0.0).sum(axis=1) / cnt
            cols += [mean, np.sqrt(var)]
            names += [f"mean_{nm}", f"std_{nm}"]
    if "observables" in groups:
        for k in ("pt", "mass", "tau21", "tau32", "n_particles"):
            cols.append(np.asarray(s.jets[k], np.float64))
            names.append(k)
    return np.stack(cols, axis=1), names


# ================================================================================= weights
def density_ratio_classifier(
    gen: np.ndarray, ref: np.ndarray, *, seed: int = 0, max_iter: int = 300
) -> tuple[Any, float]:
    """Train generated (0) vs reference (1) with balanced weights; return (classifier, held-out AUC).

    A quarter of each sample is held out for the AUC only; the trees stop early on a further 10%.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    if len(gen) < 8 or len(ref) < 8:
        raise InputError(
            "at least 8 generated and 8 reference jets to train the classifier",
            field="train_fraction",
            found=(len(gen), len(ref)),
        )
    rng = np.random.default_rng(seed)
    x = np.concatenate([gen, ref])
    y = np.concatenate([np.zeros(len(gen)), np.ones(len(ref))]).astype(np.int64)
    perm = rng.permutation(len(x))
    n_test = len(x) // 4
    test, train = perm[:n_test], perm[n_test:]
    # balanced: each class carries half the total weight, so D/(1-D) is the density ratio
    w = np.where(y == 1, 0.5 / max(len(ref), 1), 0.5 / max(len(gen), 1)) * len(x)
    clf = HistGradientBoostingClassifier(
        max_iter=max_iter,
        learning_rate=0.05,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=20,
        random_state=seed,
    )
    clf.fit(x[train], y[train], sample_weight=w[train])
    p = clf.predict_proba(x[test])[:, 1]
    auc = float(roc_auc_score(y[test], p, sample_weight=w[test])) if n_test else float("nan")
    return clf, auc


def density_ratio(clf: Any, feats: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """``w = D / (1 - D)`` for each row (D clipped to [eps, 1 - eps])."""
    d = np.clip(clf.predict_proba(feats)[:, 1], eps, 1.0 - eps)
    return d / (1.0 - d)


def rejection_accept(
    weights: np.ndarray, rng: np.random.Generator, max_weight_quantile: float = 0.99
) -> tuple[np.ndarray, float]:
    """Accept each candidate with probability ``min(1, w / w_max)``; ``w_max`` is the quantile."""
    w_max = float(np.quantile(weights, max_weight_quantile))
    return rng.uniform(size=len(weights)) < np.minimum(weights / w_max, 1.0), w_max


def effective_sample_size(w: np.ndarray) -> float:
    """Kish's effective size of a weighted sample, (sum w)^2 / sum w^2."""
    return float(w.sum() ** 2 / max(float((w**2).sum()), 1e-300))


# ================================================================================= the command
def _split_counts(n: int, fractions: np.ndarray) -> np.ndarray:
    """``n`` split in proportion to ``fractions`` (largest remainders; sums to ``n``)."""
    return np.array(largest_remainder(n, n * fractions / fractions.sum()), np.int64)


def refine_from_config(cfg: RefineConfig, *, log: Any = None) -> dict[str, Any]:
    """Write ``cfg.output``: a store of refined jets plus ``refine.json`` (settings and, per class,
    the classifier's AUC, candidates, acceptance and kept jets); return that summary."""
    say = log or (lambda _msg: None)
    gen_store, ref_store = Store(cfg.generated), Store(cfg.reference)
    out = Path(cfg.output)
    if (out / MANIFEST).is_file() and not cfg.overwrite:
        raise InputError(
            "an output folder without a finished store (or overwrite: true)",
            file=out,
            found="a finished store",
        )
    if out.exists() and not (out / REFINE_JSON).is_file() and any(out.iterdir()):
        raise InputError(
            "an empty folder or one written by `jetfm refine`", file=out, found="other files"
        )
    src = dict(gen_store.manifest.get("source", {}))
    radius = float(src.get("jet_radius", 0.8) or 0.8)
    max_len = src.get("sampling", {}).get("max_length")
    gen = gen_store.read()
    ref = ref_store.read(cfg.split)
    if max_len is not None:  # the reference jets as the generator can make them (as evaluation)
        ref = ref.truncate(int(max_len))
    gen_classes = gen_store.classes
    if gen_classes == UNCONDITIONAL_CLASSES:
        groups = {0: np.arange(ref.n_jets)}  # one classifier against every reference jet
    else:
        names = ref_store.classes
        ref_lab = np.asarray([names[i] for i in ref.jets["label"]])
        groups = {c: np.flatnonzero(ref_lab == name) for c, name in enumerate(gen_classes)}
    rng = np.random.default_rng(cfg.seed)
    gen_lab = np.asarray(gen.jets["label"], np.int64)
    present = [c for c in groups if np.any(gen_lab == c)]
    if not present:
        raise InputError("generated jets", file=gen_store.root, found="an empty store")
    for c in present:
        if len(groups[c]) == 0:
            raise InputError(
                f"reference jets of class '{gen_classes[c]}' in split '{cfg.split}'",
                file=ref_store.root,
                field="label",
                found=0,
            )
    pools = {c: rng.permutation(np.flatnonzero(gen_lab == c)) for c in present}
    n_cand = {c: len(p) - round(cfg.train_fraction * len(p)) for c, p in pools.items()}
    accepted: dict[int, np.ndarray] = {}
    per_class: dict[str, Any] = {}
    for c in present:
        pool = pools[c]
        n_train = len(pool) - n_cand[c]
        g_train, cand = pool[:n_train], pool[n_train:]
        r_idx = rng.permutation(groups[c])[: max(n_train, 8)]
        fg, names_f = refine_features(gen.select(g_train), cfg.features, jet_radius=radius)
        fr, _ = refine_features(ref.select(r_idx), cfg.features, jet_radius=radius)
        clf, auc = density_ratio_classifier(fg, fr, seed=cfg.seed, max_iter=cfg.max_iter)
        fc, _ = refine_features(gen.select(cand), cfg.features, jet_radius=radius)
        w = density_ratio(clf, fc)
        accept, w_max = rejection_accept(w, rng, cfg.max_weight_quantile)
        accepted[c] = cand[accept]
        per_class[gen_classes[c]] = {
            "classifier_jets": {"generated": int(n_train), "reference": len(r_idx)},
            "classifier_auc": auc,
            "candidates": len(cand),
            "accepted": int(accept.sum()),
            "acceptance": float(accept.mean()),
            "w_max": w_max,
            "clipped_fraction": float(np.mean(w > w_max)),
            "effective_sample_size": effective_sample_size(w),
        }
    # classes keep the pool's proportions (the classifiers are per class and know nothing of them):
    # n_jets of them, or, when null, as many as every class's accepted jets allow
    frac = np.array([n_cand[c] for c in present], np.float64)
    n_acc = np.array([len(accepted[c]) for c in present])
    n_total = cfg.n_jets
    if n_total is None:
        n_total = int(np.floor(np.min(n_acc / frac) * frac.sum()))
        while n_total > 0 and np.any(_split_counts(n_total, frac) > n_acc):
            n_total -= 1
    shares = _split_counts(n_total, frac)
    kept: list[np.ndarray] = []
    for c, need in zip(present, shares, strict=True):
        name, d = gen_classes[c], per_class[gen_classes[c]]
        if len(accepted[c]) < need:
            rate = max(d["acceptance"], 1e-9)
            pool_needed = int(np.ceil(need / rate / (1.0 - cfg.train_fraction)))
            raise InputError(
                f"at least {need} accepted '{name}' jets (a pool of about {pool_needed} "
                f"'{name}' jets at this acceptance, or a smaller n_jets)",
                file=gen_store.root,
                field="n_jets",
                found=f"{len(accepted[c])} of {d['candidates']} candidates accepted",
            )
        kept.append(accepted[c][: int(need)])
        d["kept"] = int(need)
        say(
            f"refine {name}: classifier AUC {d['classifier_auc']:.3f}, {d['accepted']} of "
            f"{d['candidates']} candidates accepted ({d['acceptance']:.2f}; weight ESS "
            f"{d['effective_sample_size']:.0f}), {need} kept"
        )
    idx = rng.permutation(np.concatenate(kept))
    if len(idx) == 0:
        raise InputError(
            "at least one accepted jet (a larger pool)", file=gen_store.root, found="none accepted"
        )
    settings = {
        **{k: v for k, v in to_dict(cfg).items() if k not in ("overwrite", "output")},
        "generated_hash": gen_store.content_hash,
        "reference_hash": ref_store.content_hash,
    }
    summary = {"settings": settings, "features": names_f, "classes": per_class}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    batch = gen.select(idx)
    shard = 10000
    for k, start in enumerate(range(0, batch.n_jets, shard)):
        part = batch.select(np.arange(start, min(start + shard, batch.n_jets)))
        write_shard(out, f"refined-{k:05d}", part, split="test", attrs={"seed": cfg.seed})
    write_json_atomic(out / REFINE_JSON, summary)
    source = {**src, "refine": settings}
    finalize_store(out, classes=list(gen_classes), source=source)
    return summary


def refine(
    generated: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    output: str | os.PathLike[str],
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`refine_from_config` with keyword settings (see :class:`RefineConfig`)."""
    cfg = RefineConfig(
        generated=Path(generated), reference=Path(reference), output=Path(output), **kwargs
    )
    return refine_from_config(cfg)
