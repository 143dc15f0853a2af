"""Fine-tuning a pre-trained backbone into a jet classifier, with the one training loop.

``finetune(config)`` takes any backbone checkpoint (an MPM or NTP run folder, a step folder, a task
folder or a bare ``backbone/`` folder), a labelled store (simulated or converted) and a regime
(``frozen`` / ``finetune`` / ``scratch``, see :mod:`jetfm.tasks.classify`), trains with
:func:`jetfm.train.fit` and writes ``<output_dir>/classifier/`` (``backbone/`` + ``task/``
checkpoint folders: safetensors, config.yaml, preprocessing.json, meta.json, the tokenizer for a
token backbone), loadable with :func:`jetfm.tasks.classify.load_classifier`.

The fine-tuning data are standardised with the *checkpoint's* preprocessing (never refitted), so a
backbone sees features on the scale it was pre-trained on. ``data.n_labels`` takes a class-balanced
labelled subset: for each class, the first jets of a permutation of the training split seeded by
``data.label_seed`` - so a 1k subset contains the 100-jet subset of the same seed, and every regime
sees exactly the same jets. The subset is held in memory (it is small by construction); without
``n_labels`` and class selection the whole split streams from the store.

The backbone's learning-rate factor is the task's ``lr_factors()``, which the training loop's
``build_optimizer`` turns into parameter groups. The frozen warm-up is the one thing the generic loop
does not do; the :class:`BackboneSchedule` callback adds it (backbone ``requires_grad`` off for
``freeze_steps`` steps; AdamW skips parameters without a gradient, so they are untouched). With DDP, ``freeze_steps > 0`` needs ``train.find_unused_parameters: true`` (the backbone gets no
gradient during the warm-up).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import lightning.pytorch as pl
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from jetfm.core.atomic import atomic_path, write_json_atomic
from jetfm.core.checkpoint import load_checkpoint
from jetfm.core.config import from_dict, save_config
from jetfm.core.errors import ConfigError, InputError
from jetfm.data.features import (
    JET_KEYS,
    Preprocessing,
    compute_features,
    required_particle_fields,
    resolve_feature_names,
)
from jetfm.data.loader import LoaderConfig, make_dataloader, pad_batch, with_pad_row
from jetfm.data.schema import JetBatch
from jetfm.data.store import ShardReader, Store
from jetfm.models.backbone import BackboneConfig
from jetfm.tasks.base import build_task
from jetfm.tasks.classify import (
    REGIMES,
    ClassifyConfig,
    ClassifyTask,
    Regime,
    backbone_sequence,
    resolve_backbone_dir,
)
from jetfm.train.config import TrainConfig
from jetfm.train.loop import fit
from jetfm.train.resume import seed_all

log = logging.getLogger(__name__)

CLASSIFIER = "classifier"


# ============================================================================ configs
@dataclass
class HeadConfig:
    """The classifier head put on the backbone."""

    kind: str = "class_attention"  # class_attention | mean
    depth: int = 2  # class-attention blocks
    heads: int = 0  # 0: the backbone's number of heads
    hidden: int = 0  # mean-pool MLP width; 0: backbone width
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("class_attention", "mean"):
            raise ConfigError(
                "one of ['class_attention', 'mean']", field="head.kind", found=repr(self.kind)
            )


@dataclass
class FinetuneDataConfig:
    """Labelled store, splits, class selection and the labelled-subset size."""

    store: Path = Path("data/default")
    train_split: str = "train"
    val_split: str | None = "val"  # null: no validation
    val_jets: int = 5000  # validation jets (a fixed random sample of the validation split)
    classes: list[str] = field(default_factory=list)  # [] = all classes of the store, in order
    n_labels: int | None = None  # labelled training jets (class-balanced); null = all
    label_seed: int = 0  # seed of the permutation the labelled subset is taken from
    feature_set: str = "kin3"  # only for scratch without a pretrained checkpoint
    preprocessing_jets: int = 50_000  # only for scratch without a pretrained checkpoint

    def __post_init__(self) -> None:
        self.store = Path(self.store)
        if self.n_labels is not None and self.n_labels < 2:
            raise ConfigError("an integer >= 2 or null", field="data.n_labels", found=self.n_labels)
        if self.val_jets < 1:
            raise ConfigError("an integer >= 1", field="data.val_jets", found=self.val_jets)
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError("distinct class names", field="data.classes", found=self.classes)


def _default_train() -> TrainConfig:
    return TrainConfig(
        output_dir=Path("runs/finetune"),
        max_steps=1000,
        checkpoint_every=1000,
        keep_last=1,
        val_every=0,
    )


@dataclass
class FinetuneConfig:
    """A fine-tuning run: pre-trained checkpoint + regime + head + labelled data + training loop.

    ``pretrained`` is required for ``frozen`` and ``finetune``. For ``scratch`` it is optional: given,
    it supplies the architecture, the preprocessing and the tokenizer (so a scratch baseline is the
    same network on the same inputs, with random weights); absent, ``backbone`` and
    ``data.feature_set`` define them.
    """

    pretrained: Path | None = None
    regime: Regime = "finetune"
    backbone_lr_factor: float = 0.1  # finetune: backbone lr = factor * train.optimizer.lr
    freeze_steps: int = 0  # finetune: head-only warm-up steps
    bidirectional: bool = False  # switch a causal (NTP) backbone to bidirectional attention
    head: HeadConfig = field(default_factory=HeadConfig)
    backbone: BackboneConfig | None = None  # scratch without `pretrained` only
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    loader: LoaderConfig = field(default_factory=lambda: LoaderConfig(batch_size=128))
    train: TrainConfig = field(default_factory=_default_train)
    keep_checkpoints: bool = True  # false: delete checkpoints/ once classifier/ is written

    def __post_init__(self) -> None:
        if self.regime not in REGIMES:
            raise ConfigError(f"one of {list(REGIMES)}", field="regime", found=repr(self.regime))
        if self.pretrained is not None:
            self.pretrained = Path(self.pretrained)
        if self.regime != "scratch" and self.pretrained is None:
            raise ConfigError(
                f"a pretrained checkpoint for regime '{self.regime}'",
                field="pretrained",
                found=None,
            )
        if self.regime == "scratch" and self.pretrained is None and self.backbone is None:
            raise ConfigError(
                "a backbone config (or a pretrained checkpoint to copy the architecture from)",
                field="backbone",
                found=None,
            )
        if self.bidirectional and self.regime == "frozen":
            raise ConfigError(
                "bidirectional: false for a frozen backbone (frozen weights only make sense with"
                " the attention they were trained with)",
                field="bidirectional",
                found=True,
            )
        if self.freeze_steps < 0:
            raise ConfigError("an integer >= 0", field="freeze_steps", found=self.freeze_steps)


# ============================================================================ labelled data
@dataclass
class LabelledJets:
    """Jets (with their jet fields) and the labels to train on (e.g. true classes, or CWoLa
    mixture labels), in memory."""

    jets: JetBatch
    labels: np.ndarray  # (n,) int64

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.shape != (self.jets.n_jets,):
            raise InputError(
                f"one label per jet ({self.jets.n_jets})",
                field="labels",
                found=f"shape {self.labels.shape}",
            )

    @property
    def n_jets(self) -> int:
        return self.jets.n_jets


def class_map(
    store_classes: Sequence[str], wanted: Sequence[str], *, file: Any = None
) -> np.ndarray:
    """Store label -> new label (position in ``wanted``), -1 for classes left out; [] keeps all."""
    store_classes = list(store_classes)
    if not wanted:
        return np.arange(len(store_classes), dtype=np.int64)
    out = np.full(len(store_classes), -1, dtype=np.int64)
    for i, name in enumerate(wanted):
        if name not in store_classes:
            raise InputError(
                f"a class of the store {store_classes}", file=file, field="data.classes", found=name
            )
        out[store_classes.index(name)] = i
    return out


def split_labels(store: Store, split: str) -> np.ndarray:
    """The store labels of every jet of ``split`` (n,), in store order (reads only labels)."""
    parts = []
    for path in store.shards(split):
        with h5py.File(path, "r") as f:
            parts.append(f["jets/label"][...].astype(np.int64))
    if not parts:
        raise InputError("jets in this split", file=store.root, field="split", found=split)
    return np.concatenate(parts)


def balanced_subset(
    labels: np.ndarray, n: int | None, n_classes: int, seed: int, *, file: Any = None
) -> np.ndarray:
    """Indices of a class-balanced labelled subset: per class the first jets of a seeded permutation.

    ``labels`` are already mapped (-1 = not used). Class ``c`` gets ``n // C`` jets, the first
    ``n % C`` classes one more. ``n = None`` takes every usable jet. Nested in ``n`` for a fixed
    seed; returned in permutation order (so a prefix is not class-sorted).
    """
    perm = np.random.default_rng([seed, 7919]).permutation(len(labels))
    usable = perm[labels[perm] >= 0]
    if n is None:
        return usable
    quota = np.full(n_classes, n // n_classes)
    quota[: n % n_classes] += 1
    take = []
    for c in range(n_classes):
        idx = usable[labels[usable] == c]
        if len(idx) < quota[c]:
            raise InputError(
                f"at least {quota[c]} jets of class {c} for n_labels={n}",
                file=file,
                field="data.n_labels",
                found=f"{len(idx)} jets",
            )
        take.append(idx[: quota[c]])
    chosen = np.concatenate(take)
    rank = np.empty(len(perm), dtype=np.int64)
    rank[perm] = np.arange(len(perm))
    return chosen[np.argsort(rank[chosen], kind="stable")]


def read_jets(
    store: Store, split: str, indices: np.ndarray, particle_fields: list[str]
) -> JetBatch:
    """Jets ``indices`` (positions in the split, store order) in the given order; one shard at a
    time, so memory holds one shard plus the selection."""
    indices = np.asarray(indices, dtype=np.int64)
    sizes = store.shard_sizes(split)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    shard_of = np.searchsorted(starts, indices, side="right") - 1
    parts: list[JetBatch] = []
    where: list[np.ndarray] = []
    for s, path in enumerate(store.shards(split)):
        pick = np.flatnonzero(shard_of == s)
        if not len(pick):
            continue
        reader = ShardReader.open(path)
        try:
            local = indices[pick] - starts[s]
            lo, hi = int(local.min()), int(local.max()) + 1
            b = reader.read(
                lo, hi, particle_fields=particle_fields, jet_fields=[*JET_KEYS, "label"]
            )
            parts.append(b.select(local - lo))
            where.append(pick)
        finally:
            reader.close()
    if not parts:
        raise InputError("at least one jet", file=store.root, field=split, found=0)
    joined = JetBatch.concatenate(parts)
    order = np.empty(len(indices), dtype=np.int64)
    order[np.concatenate(where)] = np.arange(len(indices))
    return joined.select(order)


def load_labelled(
    store: Store,
    split: str,
    mapping: np.ndarray,
    pre: Preprocessing,
    *,
    n: int | None = None,
    seed: int = 0,
    first: int | None = None,
) -> LabelledJets:
    """A labelled subset of ``split``: ``n`` class-balanced jets (seeded permutation order), else
    (validation/test sets) all usable jets, or a fixed random sample of ``first`` of them, in store
    order - never just the first shards, which in a simulated store hold one class each."""
    labels = mapping[split_labels(store, split)]
    n_classes = int(mapping.max()) + 1
    if n is None:
        idx = np.flatnonzero(labels >= 0)
        if first is not None and first < len(idx):
            # a fixed random sample, not the first shards (simulated stores are class-sorted)
            pick = np.random.default_rng(12345).permutation(len(idx))[:first]
            idx = idx[np.sort(pick)]  # store order
    else:
        idx = balanced_subset(labels, n, n_classes, seed, file=store.root)
    jets = read_jets(store, split, idx, required_particle_fields(pre.feature_names))
    return LabelledJets(jets, labels[idx])


# ============================================================================ in-memory loader
class InMemoryJets:
    """Loader factory over labelled jets in memory (a small labelled subset, a validation set).

    Global batch ``i`` of an epoch holds ``batch_size * world_size`` jets of a permutation seeded by
    ``(seed, epoch)``; rank ``r`` takes slice ``r``: disjoint across ranks, identical batch counts,
    reproducible, resumable at ``start_batch``. Batches pad to their longest jet (at most
    ``max_particles``, keeping the leading particles).
    """

    def __init__(
        self,
        data: LabelledJets,
        pre: Preprocessing,
        batch_size: int,
        max_particles: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        x = compute_features(data.jets, pre.feature_names)
        self.x = with_pad_row(pre.transform(x).astype(np.float32))  # (P + 1, F)
        self.data = data
        self.batch_size, self.max_particles = batch_size, max_particles
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last

    @property
    def n_jets(self) -> int:
        return self.data.n_jets

    def _bs(self, world_size: int) -> int:
        # a labelled set smaller than one global batch still trains: one smaller batch per rank
        return max(1, min(self.batch_size, self.n_jets // world_size))

    def n_batches(self, world_size: int = 1) -> int:
        gbs = self._bs(world_size) * world_size
        full = self.n_jets // gbs
        return full if self.drop_last or self.n_jets % gbs == 0 else full + 1

    def __call__(
        self, *, rank: int = 0, world_size: int = 1, epoch: int = 0, start_batch: int = 0
    ) -> Iterator[dict[str, torch.Tensor]]:
        n = self.n_jets
        order = (
            np.random.default_rng([self.seed, epoch, 31]).permutation(n)
            if self.shuffle
            else np.arange(n)
        )
        bs = self._bs(world_size)
        gbs = bs * world_size
        for i in range(start_batch, self.n_batches(world_size)):
            chunk = order[i * gbs : (i + 1) * gbs]
            idx = (
                chunk[rank * bs : (rank + 1) * bs] if len(chunk) == gbs else chunk[rank::world_size]
            )
            if not len(idx):
                continue
            out = pad_batch(self.x, self.data.jets.offsets, self.data.jets, idx, self.max_particles)
            out["label"] = torch.from_numpy(self.data.labels[idx])
            yield out


# ============================================================================ callback
class BackboneSchedule(Callback):
    """A head-only warm-up: the backbone gets no gradient for the first ``freeze_steps`` steps."""

    def __init__(self, freeze_steps: int = 0) -> None:
        self.freeze_steps = freeze_steps
        self._frozen = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step < self.freeze_steps:
            pl_module.task.backbone.requires_grad_(False)
            self._frozen = True

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._frozen and trainer.global_step >= self.freeze_steps:
            pl_module.task.backbone.requires_grad_(True)
            self._frozen = False


# ============================================================================ finetune
@dataclass
class PretrainedParts:
    """What a fine-tuning run takes from a pre-trained checkpoint."""

    backbone_dir: Path | None
    backbone: BackboneConfig
    preprocessing: Preprocessing
    tokenizer: Path | None
    state_dict: dict[str, torch.Tensor] | None
    meta: dict[str, Any]


def load_pretrained(path: str | Path) -> PretrainedParts:
    """Backbone config, weights, preprocessing and tokenizer of any pre-trained checkpoint."""
    bdir = resolve_backbone_dir(path)
    ckpt = load_checkpoint(bdir, kind="backbone")
    cfg = from_dict(BackboneConfig, ckpt.config, file=str(bdir / "config.yaml"))
    if ckpt.preprocessing is None:
        raise InputError(
            "a backbone checkpoint with preprocessing.json (feature order and standardisation)",
            file=bdir,
            field="preprocessing.json",
            found="missing",
        )
    pre = Preprocessing.from_dict(ckpt.preprocessing, source=str(bdir / "preprocessing.json"))
    return PretrainedParts(bdir, cfg, pre, ckpt.tokenizer_path, ckpt.state_dict, ckpt.meta)


def pretraining_inputs_not_reproduced(backbone_dir: Path) -> list[str]:
    """Input options of a next-token pre-training (its ``task/config.yaml`` beside the backbone)
    that the classifier's ``[START, t_1 .. t_n]`` sequence does not reproduce: jet tokens before
    the particles, decoded instead of exact hybrid features, the task's position embedding and
    Fourier-feature input embedding."""
    path = backbone_dir.parent / "task" / "config.yaml"
    if not path.is_file():
        return []
    task = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if task.get("name") != "ntp":
        return []
    out = []
    if task.get("jet_tokens"):
        out.append(f"jet tokens {list(task['jet_tokens'])}")
    hybrid = (task.get("backbone") or {}).get("input") == "hybrid"
    if hybrid and task.get("hybrid_features") == "decoded":
        out.append("decoded hybrid features (hybrid_features: decoded)")
    if task.get("position_embedding"):
        out.append("a position embedding (position_embedding: true)")
    if task.get("fourier_input"):
        out.append("a Fourier-feature input embedding (fourier_input: true)")
    return out


def _parts(cfg: FinetuneConfig, store: Store) -> PretrainedParts:
    if cfg.pretrained is not None:
        return load_pretrained(cfg.pretrained)
    assert cfg.backbone is not None  # checked by FinetuneConfig
    names = resolve_feature_names(cfg.data.feature_set)
    if cfg.backbone.input != "features" or cfg.backbone.n_features != len(names):
        raise ConfigError(
            f"input 'features' with n_features {len(names)} (data.feature_set"
            f" '{cfg.data.feature_set}'); token backbones need a pretrained checkpoint",
            field="backbone",
            found=f"input '{cfg.backbone.input}', n_features {cfg.backbone.n_features}",
        )
    data = store.read(
        cfg.data.train_split,
        limit=cfg.data.preprocessing_jets,
        particle_fields=required_particle_fields(names),
        jet_fields=list(JET_KEYS),
    )
    pre = Preprocessing.for_set(names, max_particles=cfg.loader.max_particles).fit(data)
    return PretrainedParts(None, cfg.backbone, pre, None, None, {})


def build_classifier(
    cfg: FinetuneConfig, parts: PretrainedParts, class_names: list[str]
) -> ClassifyTask:
    """The classification task of a fine-tuning run, backbone weights loaded unless ``scratch``."""
    bb = parts.backbone
    if cfg.bidirectional and bb.causal:
        bb = dataclasses.replace(bb, causal=False)
    task_cfg = ClassifyConfig(
        backbone=bb,
        n_classes=len(class_names),
        class_names=list(class_names),
        head=cfg.head.kind,  # type: ignore[arg-type]
        head_depth=cfg.head.depth,
        head_heads=cfg.head.heads,
        head_hidden=cfg.head.hidden,
        head_dropout=cfg.head.dropout,
        sequence=backbone_sequence(parts.backbone),
        tokenizer=None if parts.tokenizer is None else str(parts.tokenizer),
        regime=cfg.regime,
        backbone_lr_factor=cfg.backbone_lr_factor,
        freeze_steps=cfg.freeze_steps,
    )
    task = build_task(task_cfg)
    assert isinstance(task, ClassifyTask)
    if cfg.regime != "scratch":
        assert parts.state_dict is not None
        task.backbone.load_state_dict(parts.state_dict, strict=True)
    return task


def finetune(
    config: FinetuneConfig,
    *,
    labelled: LabelledJets | None = None,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
) -> Path:
    """Fine-tune (or train from scratch) a classifier; returns ``<train.output_dir>/classifier``.

    ``labelled`` replaces the store's training split (jets + labels, e.g. CWoLa mixtures; their
    labels index ``data.classes``, or the store's classes); the store still supplies validation
    jets. ``overwrite`` deletes an existing output folder first; otherwise an existing run is an
    error (as in :func:`jetfm.train.fit`).
    """
    cfg = config
    run_dir = Path(cfg.train.output_dir)
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    if (run_dir / "checkpoints").exists() or (run_dir / CLASSIFIER).exists():
        raise InputError(
            "an empty output folder (pass overwrite to replace it)",
            file=run_dir,
            field="train.output_dir",
            found="an earlier run",
        )
    store = Store(cfg.data.store)
    mapping = class_map(store.classes, cfg.data.classes, file=store.root)
    class_names = list(cfg.data.classes) or store.classes
    parts = _parts(cfg, store)
    pre = parts.preprocessing
    for f in required_particle_fields(pre.feature_names):
        if f not in store.particle_fields:
            raise InputError(
                f"particle field '{f}' (the checkpoint's features {list(pre.feature_names)})",
                file=store.root,
                field=f,
                found=f"fields {store.particle_fields}",
            )
    if cfg.regime != "scratch" and parts.backbone_dir is not None:
        for what in pretraining_inputs_not_reproduced(parts.backbone_dir):
            warnings.warn(
                f"{parts.backbone_dir}: the backbone was pre-trained with {what}, which the"
                " classifier does not feed (it reads [START, particle tokens]); its features are"
                " used off their training distribution",
                stacklevel=2,
            )
    seed_all(cfg.train.seed)  # the head's initial weights (and a scratch backbone's)
    task = build_classifier(cfg, parts, class_names)

    bs, maxp = cfg.loader.batch_size, cfg.loader.max_particles
    if labelled is None and cfg.data.n_labels is None and not cfg.data.classes:
        train_factory: Any = functools.partial(
            make_dataloader, store.root, cfg.data.train_split, pre, cfg.loader
        )
        n_train = store.n_jets(cfg.data.train_split)
        counts = np.bincount(split_labels(store, cfg.data.train_split), minlength=len(class_names))
    else:
        if labelled is None:
            labelled = load_labelled(
                store,
                cfg.data.train_split,
                mapping,
                pre,
                n=cfg.data.n_labels,
                seed=cfg.data.label_seed,
            )
        if labelled.labels.min(initial=0) < 0 or labelled.labels.max(initial=0) >= len(class_names):
            raise InputError(
                f"labels in [0, {len(class_names)})",
                field="labelled.labels",
                found=labelled.labels.max(),
            )
        train_factory = InMemoryJets(labelled, pre, bs, maxp, seed=cfg.loader.seed)
        n_train = labelled.n_jets
        counts = np.bincount(labelled.labels, minlength=len(class_names))
    val_factory = None
    if cfg.data.val_split is not None and cfg.train.val_every > 0:
        val = load_labelled(store, cfg.data.val_split, mapping, pre, first=cfg.data.val_jets)
        val_factory = InMemoryJets(val, pre, bs, maxp, shuffle=False, drop_last=False)

    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    pre.save(run_dir / "preprocessing.json")
    meta = {
        "task": "classify",
        "regime": cfg.regime,
        "pretrained": None if parts.backbone_dir is None else str(parts.backbone_dir),
        "pretrained_hash": parts.meta.get("content_hash"),
        "pretrained_task": parts.meta.get("task"),
        "store": str(store.root),
        "data_hash": store.content_hash,
        "classes": class_names,
        "n_labels": int(n_train),
        "label_seed": cfg.data.label_seed,
        "class_counts": [int(c) for c in counts],
    }
    write_json_atomic(run_dir / "labelled.json", meta)
    res = fit(
        task,
        train_factory,
        val_factory,
        cfg.train,
        preprocessing=pre.to_dict(),
        meta=meta,
        callbacks=[
            BackboneSchedule(cfg.freeze_steps if cfg.regime == "finetune" else 0),
            *callbacks,
        ],
    )
    if res.checkpoint is None:  # pragma: no cover - fit always writes a final step folder
        raise InputError("a final checkpoint", file=run_dir, field="checkpoints", found="none")
    out = run_dir / CLASSIFIER
    with atomic_path(out) as tmp:
        shutil.copytree(res.checkpoint / "model", tmp)
    if not cfg.keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return out
