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

**Classifiers.** ``trees`` (default): scikit-learn's histogram gradient-boosted trees on the
``features`` above (fast on a CPU, no tuning, missing leading particles are NaN). ``network``: a
permutation-invariant transformer (jetfm's backbone with a class-attention head, trained from scratch
with the one training loop) on the jet's particles themselves - (Δη, Δφ, log pT) to the axis of the
massless constituents, the jets as the metrics see them - so no hand-picked summary and no scored
observable enters; ``features`` is then unused. Its checkpoints are kept in the refined store's
``classifiers/<class>/`` folder. Shapes: B jets, N particles.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jetfm.core.atomic import write_json_atomic
from jetfm.core.config import from_dict, to_dict
from jetfm.core.errors import ConfigError, InputError
from jetfm.core.rounding import largest_remainder
from jetfm.data.features import (
    JET_KEYS,
    Preprocessing,
    required_particle_fields,
    resolve_feature_names,
)
from jetfm.data.schema import JetBatch
from jetfm.data.store import MANIFEST, Store, finalize_store, write_shard
from jetfm.evaluate.generation import UNCONDITIONAL_CLASSES, jet_sample_from_batch
from jetfm.evaluate.predict import score
from jetfm.models.backbone import BackboneConfig
from jetfm.physics.jets import jet_four_momentum
from jetfm.tasks.base import build_task
from jetfm.tasks.classify import ClassifyConfig, ClassifyTask
from jetfm.train.config import OptimizerConfig, ScheduleConfig, TrainConfig
from jetfm.train.finetune import InMemoryJets, LabelledJets
from jetfm.train.loop import fit
from jetfm.train.resume import seed_all

REFINE_JSON = "refine.json"
CLASSIFIERS = ("trees", "network")
CLASSIFIER_DIR = "classifiers"
FEATURE_GROUPS = ("particles", "observables")
N_LEADING = 8  # particles whose (dR, log pT_rel) are features
N_PAIRS = 4  # leading particles whose pairwise dR are features


@dataclass
class NetworkConfig:
    """``classifier: network``: a transformer on the jet's particles, trained from scratch per class.

    ``steps`` optimizer steps of ``batch_size`` jets (AdamW, cosine schedule with a 5% warm-up);
    ``max_particles`` leading particles per jet (the generator's ``max_length`` is the natural
    choice). ``accelerator``: ``auto``/``cpu``/``gpu``/``mps``.
    """

    dim: int = 64
    depth: int = 3
    heads: int = 4
    head_depth: int = 1
    dropout: float = 0.0
    feature_set: str = "kin3"
    max_particles: int = 64
    batch_size: int = 128
    steps: int = 2000
    lr: float = 1.0e-3
    weight_decay: float = 0.01
    min_pt: float = 0.0  # GeV: softer particles are not shown to the network (both samples)
    accelerator: str = "auto"
    progress_bar: bool = True

    def __post_init__(self) -> None:
        resolve_feature_names(self.feature_set)  # a known set, or a ConfigError naming it
        for name in ("dim", "depth", "heads", "head_depth", "max_particles", "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    "an integer >= 1", field=f"network.{name}", found=getattr(self, name)
                )
        if self.dim % self.heads:
            raise ConfigError(
                f"a dim divisible by heads ({self.heads})", field="network.dim", found=self.dim
            )
        if self.lr <= 0:
            raise ConfigError("a number > 0", field="network.lr", found=self.lr)
        if self.min_pt < 0:
            raise ConfigError("a number >= 0", field="network.min_pt", found=self.min_pt)


@dataclass
class RefineConfig:
    """``jetfm refine``: keep generated jets with probability ``min(1, w / w_max)``.

    ``generated``: the pool (a ``jetfm sample`` store). ``reference``/``split``: simulated jets the
    classifier learns from (the generator's training split; never the split the metrics use).
    ``n_jets``: jets to keep (null: as many as every class's accepted jets allow, in the pool's
    class proportions). ``classifier``: ``trees`` on ``features`` (groups among ``particles`` and
    ``observables``, see the module docstring) or ``network`` on the particles (``network``). ``max_weight_quantile``: ``w_max``
    is this quantile of the candidates' weights (1.0: their maximum, exact but wasteful; below 1 the
    heaviest weights are clipped, a small bias for many more kept jets).
    """

    generated: Path = Path("data/generated")
    reference: Path = Path("data/default")
    output: Path = Path("data/refined")
    split: str = "train"
    n_jets: int | None = None
    classifier: str = "trees"  # trees | network
    features: list[str] = field(default_factory=lambda: ["particles"])
    network: NetworkConfig = field(default_factory=NetworkConfig)
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
        if isinstance(self.network, dict):  # keyword use: refine(..., network={...})
            self.network = from_dict(NetworkConfig, self.network, prefix="network.")
        if self.classifier not in CLASSIFIERS:
            raise ConfigError(
                f"one of {list(CLASSIFIERS)}", field="classifier", found=repr(self.classifier)
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
    s = jet_sample_from_batch(batch, jet_radius=jet_radius, massless=True)
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
    return ratio_from_scores(clf.predict_proba(feats)[:, 1], eps)


# ================================================================================= network
def with_constituent_axis(
    batch: JetBatch, fields: list[str] | tuple[str, ...], *, min_pt: float = 0.0
) -> JetBatch:
    """The jets with only ``fields`` per particle and their axis (pt, eta, phi, mass, energy)
    recomputed from the massless constituents, as the generation metrics see them; then the
    particles below ``min_pt`` (GeV) are dropped (each jet keeps at least its leading one).

    Why: a simulated jet's stored axis belongs to all its massive particles, not to the leading
    ``max_length`` a generator makes; a classifier would learn that bookkeeping difference. The pT
    floor keeps a classifier off the extreme soft tail (a token decoder has a softest cell; a
    detector a threshold), which the IRC-safe jet observables hardly see.
    """
    p = batch.particles
    e = np.sqrt(sum(p[k].astype(np.float64) ** 2 for k in ("px", "py", "pz")))  # (P,) massless
    axis = jet_four_momentum(p["px"], p["py"], p["pz"], e, batch.offsets)
    jets = {k: np.asarray(axis[k], np.float32) for k in JET_KEYS}
    jets["label"] = batch.jets["label"]
    keep = np.asarray(p["pt"]) >= min_pt  # (P,)
    keep[batch.offsets[:-1]] = True  # each jet's leading particle (stores are pT-ordered, no jet
    # is empty)
    counts = np.add.reduceat(keep.astype(np.int64), batch.offsets[:-1])  # (B,)
    offsets = np.zeros(batch.n_jets + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    jets["n_particles"] = counts.astype(batch.jets["n_particles"].dtype)
    return JetBatch(offsets=offsets, particles={k: p[k][keep] for k in fields}, jets=jets)


def train_network_classifier(
    gen: JetBatch, ref: JetBatch, cfg: NetworkConfig, run_dir: Path, *, seed: int = 0
) -> tuple[ClassifyTask, Preprocessing, float, Path]:
    """Train generated (0) vs reference (1) jets, as many of each, with :func:`jetfm.train.fit`.

    Returns the trained classifier (reloaded from its final checkpoint, in eval mode), its input
    standardisation (fitted on its training jets), its ROC AUC on a held-out quarter of the jets
    and the checkpoint's model folder. Equal numbers make ``D / (1 - D)`` the density ratio.
    """
    from sklearn.metrics import roc_auc_score

    n = min(gen.n_jets, ref.n_jets)
    if n < 8:
        raise InputError(
            "at least 8 generated and 8 reference jets to train the classifier",
            field="train_fraction",
            found=(gen.n_jets, ref.n_jets),
        )
    rng = np.random.default_rng([seed, 17])
    jets = JetBatch.concatenate(
        [gen.select(rng.permutation(gen.n_jets)[:n]), ref.select(rng.permutation(ref.n_jets)[:n])]
    )
    y = np.repeat(np.array([0, 1], np.int64), n)  # (2n,) generated 0, reference 1
    perm = rng.permutation(2 * n)
    test, train = perm[: (2 * n) // 4], perm[(2 * n) // 4 :]
    names = resolve_feature_names(cfg.feature_set)
    train_jets = jets.select(train)
    pre = Preprocessing.for_set(names, max_particles=cfg.max_particles).fit(train_jets)
    seed_all(seed)
    backbone = BackboneConfig(
        dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, dropout=cfg.dropout, n_features=len(names)
    )
    task = build_task(
        ClassifyConfig(
            backbone=backbone,
            n_classes=2,
            class_names=["generated", "simulated"],
            head_depth=cfg.head_depth,
            regime="scratch",
        )
    )
    tcfg = TrainConfig(
        output_dir=run_dir,
        max_steps=cfg.steps,
        optimizer=OptimizerConfig(lr=cfg.lr, weight_decay=cfg.weight_decay),
        schedule=ScheduleConfig(name="cosine", warmup_steps=max(1, cfg.steps // 20)),
        accelerator=cfg.accelerator,
        devices=1,
        checkpoint_every=cfg.steps,
        keep_last=1,
        val_every=0,
        seed=seed,
        progress_bar=cfg.progress_bar,
        quiet=True,
    )
    loader = InMemoryJets(
        LabelledJets(train_jets, y[train]), pre, cfg.batch_size, cfg.max_particles, seed=seed
    )
    meta = {"task": "classify", "purpose": "refine: generated (0) vs simulated (1)"}
    res = fit(task, loader, None, tcfg, preprocessing=pre.to_dict(), meta=meta)
    assert res.checkpoint is not None  # fit always writes a final step folder
    model = res.checkpoint / "model"
    trained = ClassifyTask.from_pretrained(model)
    assert isinstance(trained, ClassifyTask)
    trained = trained.eval()
    p = network_scores(trained, pre, jets.select(test), cfg.max_particles)
    auc = float(roc_auc_score(y[test], p)) if len(test) else float("nan")
    return trained, pre, auc, model


def network_scores(
    task: ClassifyTask, pre: Preprocessing, jets: JetBatch, max_particles: int
) -> np.ndarray:
    """``D`` (B,): the classifier's probability that each jet is simulated."""
    data = LabelledJets(jets, np.zeros(jets.n_jets, np.int64))
    return score(task, data, pre, max_particles=max_particles)[:, 1]


def ratio_from_scores(d: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """``w = D / (1 - D)`` (D clipped to [eps, 1 - eps])."""
    d = np.clip(np.asarray(d, np.float64), eps, 1.0 - eps)
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
    the classifier's AUC, candidates, acceptance and kept jets); return that summary.

    Network classifiers train in a temporary folder beside the output (removed afterwards, also on
    errors); their final models are copied into ``<output>/classifiers/<class>/``.
    """
    out = Path(cfg.output)
    if cfg.classifier != "network":
        return _refine(cfg, log, None)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        return _refine(cfg, log, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _refine(cfg: RefineConfig, log: Any, work: Path | None) -> dict[str, Any]:
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
    models: dict[int, Path] = {}  # network classifiers' model folders, per class
    for c in present:
        pool = pools[c]
        n_train = len(pool) - n_cand[c]
        g_train, cand = pool[:n_train], pool[n_train:]
        r_idx = rng.permutation(groups[c])[: max(n_train, 8)]
        if cfg.classifier == "trees":
            fg, names_f = refine_features(gen.select(g_train), cfg.features, jet_radius=radius)
            fr, _ = refine_features(ref.select(r_idx), cfg.features, jet_radius=radius)
            clf, auc = density_ratio_classifier(fg, fr, seed=cfg.seed, max_iter=cfg.max_iter)
            fc, _ = refine_features(gen.select(cand), cfg.features, jet_radius=radius)
            w = density_ratio(clf, fc)
        else:
            assert work is not None  # refine_from_config makes it for network classifiers
            net = cfg.network
            fields = required_particle_fields(resolve_feature_names(net.feature_set))
            names_f = [f"particles: {f}" for f in resolve_feature_names(net.feature_set)]
            task, pre, auc, models[c] = train_network_classifier(
                with_constituent_axis(gen.select(g_train), fields, min_pt=net.min_pt),
                with_constituent_axis(ref.select(r_idx), fields, min_pt=net.min_pt),
                net,
                work / f"class{c}",
                seed=cfg.seed,
            )
            gc = with_constituent_axis(gen.select(cand), fields, min_pt=net.min_pt)
            w = ratio_from_scores(network_scores(task, pre, gc, net.max_particles))
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
    for c, model in models.items():
        shutil.copytree(model, out / CLASSIFIER_DIR / gen_classes[c])
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
