"""``jetfm sample``: draw jets from a next-token checkpoint into a native store.

Pipeline of :func:`sample`::

    NTP checkpoint --generate_tokens (KV cache)--> token ids (B, N) + mask
      --decode_to_jets (jetfm.evaluate.decoding)--> particles (pT, eta, phi, E)
      --> native store (write_shard + finalize_store), jet fields recomputed from the constituents

**Labels.** A class-conditional model samples the requested class (``class_label``), or, when none
is given, cycles through all classes (jet ``i`` gets class ``i mod n_classes``). An unconditional
model's jets get label 0 of the single class ``"generated"``. With ``jet_condition_from`` each jet
takes the class and jet-token bins of a jet drawn from a store (:func:`reference_jet_bins`).

**Guidance** (:func:`class_guidance`): each token's logits are pushed away from a contrast's, the
same model under another class or another checkpoint over the same tokens (autoguidance).

Shapes: B jets, N particles, J jet tokens.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jetfm.core.atomic import write_json_atomic
from jetfm.core.config import to_dict
from jetfm.core.errors import ConfigError, InputError
from jetfm.data.schema import JetBatch
from jetfm.data.store import MANIFEST, Store, finalize_store, shard_exists, write_shard
from jetfm.evaluate.decoding import decode_to_jets, padded_chunks, resolve_preprocessing
from jetfm.models.sampler import SamplingConfig, seeded_generator

GENERATION_JSON = "generation.json"
UNCONDITIONAL_CLASSES = ["generated"]


@dataclass
class SampleConfig:
    """``jetfm sample``: draw ``n_jets`` jets from a next-token checkpoint into a native store.

    ``checkpoint`` is an NTP run folder (its newest step is used), a step folder, or the ``model``/
    ``task`` folder inside one. ``top_k: 0`` and ``top_p: 1.0`` switch those filters off;
    ``temperature: 0`` is greedy. ``class_label``: class index or name for a class-conditional
    model (null: all classes in turn). The same seed, batch size and settings give the same jets.
    ``jet_condition``: for a model with jet tokens, fixed physical values of its leading jet tokens
    (e.g. ``{pt: 600, mass: 175}`` in GeV): every jet is drawn in those bins (conditional
    generation); empty: the bins are drawn too. ``consistent`` (jet tokens only): each jet's
    particles must land in its drawn bins, as every training jet does: STOP only inside the
    multiplicity bin, the particles' pT scaled by one factor that puts the jet pT in its bin, and
    jets whose mass is more than ``bin_tolerance`` bins off redrawn given the same bins, up to
    ``max_redraws`` times (see :meth:`~jetfm.tasks.ntp.NTPTask.sample_tokens`).
    ``jet_condition_from`` (jet tokens only): a store; each jet is generated in the jet-token bins
    (and class) of a jet drawn at random from its ``jet_condition_split``, so the GPT writes only
    the particles, for jet-level values distributed as in those jets (e.g. the training jets).
    ``jet_temperature`` (jet tokens only): the temperature of the jet-token draws (null: the same
    as the particles'), so a lower particle temperature need not sharpen the jet-level
    distributions too. ``residual_temperature`` (two-level tokens only): the temperature of the
    residual-code draw, a particle's offset within its drawn cell (null: ``temperature``).
    ``guidance``: each token's logits become ``l + w (l - l_contrast)``, with ``l_contrast`` the
    logits of a contrast for the same prefix: the same model under the class ``guide_against``
    (null: the other class of a two-class model; class guidance), or the model at
    ``guide_checkpoint`` (another NTP checkpoint over the same tokens and jet-token bins, e.g. a
    less-trained one: autoguidance), under the jet's own class unless ``guide_against`` is set.
    One weight ``w`` for every class, or ``{class name: w}`` (missing classes: 0). Sampling costs
    ~2x while any weight is not 0.
    """

    checkpoint: Path = Path("runs/ntp")
    output: Path = Path("data/generated")
    n_jets: int = 1000
    batch_size: int = 256
    temperature: float = 1.0
    jet_temperature: float | None = None
    residual_temperature: float | None = None
    top_k: int = 0
    top_p: float = 1.0
    max_length: int = 128
    min_length: int = 1
    seed: int = 0
    class_label: int | str | None = None
    jet_condition: dict[str, float] = field(default_factory=dict)
    jet_condition_from: Path | None = None
    jet_condition_split: str = "train"
    consistent: bool = False
    max_redraws: int = 10
    bin_tolerance: int = 0
    guidance: float | dict[str, float] = 0.0
    guide_against: int | str | None = None
    guide_checkpoint: Path | None = None
    use_cache: bool = True
    head_dtype: str = "float32"  # float32 | bfloat16 (faster output projection, other draws)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    shard_size: int = 10_000  # jets per store shard (a whole number of batches is used)
    jet_radius: float = 0.8  # R of the N-subjettiness normalisation (the clustering radius)
    overwrite: bool = False  # replace a finished store at ``output``

    def __post_init__(self) -> None:
        self.checkpoint, self.output = Path(self.checkpoint), Path(self.output)
        if self.guide_checkpoint is not None:
            self.guide_checkpoint = Path(self.guide_checkpoint)
        if self.jet_condition_from is not None:
            self.jet_condition_from = Path(self.jet_condition_from)
            if self.jet_condition or self.class_label is not None:
                raise ConfigError(
                    "no jet_condition or class_label with jet_condition_from (its jets set both)",
                    field="jet_condition_from",
                    found=str(self.jet_condition_from),
                )
        for name in ("n_jets", "batch_size", "shard_size"):
            if getattr(self, name) < 1:
                raise ConfigError("an integer >= 1", field=name, found=getattr(self, name))
        if not self.jet_radius > 0:
            raise ConfigError("jet_radius > 0", field="jet_radius", found=self.jet_radius)
        for name in ("max_redraws", "bin_tolerance"):
            if getattr(self, name) < 0:
                raise ConfigError("an integer >= 0", field=name, found=getattr(self, name))
        self.sampling()  # validates temperature, top_k, top_p, max_length, min_length

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(
            temperature=self.temperature,
            prefix_temperature=self.jet_temperature,
            residual_temperature=self.residual_temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            max_length=self.max_length,
            min_length=self.min_length,
            use_cache=self.use_cache,
            head_dtype=self.head_dtype,
        )


def resolve_ntp_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The ``task`` checkpoint folder behind a run folder, a step folder, or a model/task folder."""
    # imported only here: jetfm.train pulls in Lightning (seconds to import)
    from jetfm.train.resume import resolve_task_checkpoint

    return resolve_task_checkpoint(path)


def load_ntp(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Any:
    """Load the NTPTask (with its frozen tokenizer) of a checkpoint; eval mode."""
    from jetfm.tasks.base import Task
    from jetfm.tasks.ntp import NTPTask

    folder = resolve_ntp_checkpoint(path)
    task = Task.from_pretrained(folder, map_location=device)
    if not isinstance(task, NTPTask):
        raise InputError("a next-token ('ntp') checkpoint", file=folder, found=type(task).__name__)
    return task.eval()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _class_names(folder: Path, n_classes: int) -> list[str]:
    """Class names of the training store recorded in the checkpoint, else ``class0`` ... ."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        store = meta.get("store")
        if store:
            classes = Store(store).classes
            if len(classes) == n_classes:
                return classes
    except (OSError, ValueError):
        pass
    return [f"class{i}" for i in range(n_classes)]


def _labels_for(
    class_label: int | str | None, classes: list[str], n_classes: int, start: int, n: int
) -> np.ndarray | None:
    if n_classes == 0:
        if class_label is not None:
            raise ConfigError(
                "null (the model was trained without class conditioning)",
                field="class_label",
                found=class_label,
            )
        return None
    if class_label is None:
        return (np.arange(start, start + n) % n_classes).astype(np.int64)
    if isinstance(class_label, str):
        if class_label not in classes:
            raise ConfigError(f"one of {classes}", field="class_label", found=repr(class_label))
        idx = classes.index(class_label)
    else:
        idx = int(class_label)
    if not 0 <= idx < n_classes:
        raise ConfigError(f"a class in [0, {n_classes})", field="class_label", found=class_label)
    return np.full(n, idx, dtype=np.int64)


def class_guidance(
    guidance: float | Mapping[str, float],
    guide_against: int | str | None,
    classes: list[str],
    n_classes: int,
    *,
    guide_model: bool = False,
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Guidance settings -> (weight (n_classes,) float32, contrast class (n_classes,) int64 or None:
    each jet's own class) indexed by a jet's class (index 0 for an unconditional model), or None
    when every weight is 0 (no guidance, no extra cost). Without a ``guide_model`` the contrast is
    another class of the same model: ``guide_against``, or the other class of a two-class model."""
    if isinstance(guidance, Mapping):
        unknown = sorted(set(guidance) - set(classes))
        if unknown:
            raise ConfigError(f"class names among {classes}", field="guidance", found=unknown)
        weights = np.array([float(guidance.get(c, 0.0)) for c in classes], np.float32)
    else:
        weights = np.full(max(n_classes, 1), float(guidance), np.float32)
    if not np.isfinite(weights).all():
        raise ConfigError("finite weights", field="guidance", found=weights.tolist())
    if not weights.any():
        return None
    if guide_against is None:
        if guide_model:
            return weights, None
        if n_classes != 2:
            raise ConfigError(
                f"a contrast class (guide_against) or a guide_checkpoint for guidance with "
                f"{n_classes} classes",
                field="guide_against",
                found=None,
            )
        return weights, np.array([1, 0], np.int64)
    idx = _labels_for(guide_against, classes, n_classes, 0, 1)
    assert idx is not None
    return weights, np.full(n_classes, int(idx[0]), np.int64)


def _prepare_output(out: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Refuse to mix runs: a finished store needs ``overwrite``; a partial one must match settings."""
    gen = out / GENERATION_JSON
    if (out / MANIFEST).is_file():
        if not overwrite:
            raise InputError(
                "an output folder without a finished store (or overwrite: true)",
                file=out,
                found="a finished store",
            )
        if not gen.is_file():
            raise InputError(
                "a store written by `jetfm sample` to overwrite", file=out, found="another store"
            )
        shutil.rmtree(out)
    if gen.is_file():
        old = json.loads(gen.read_text(encoding="utf-8"))
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise InputError(
                "the same settings as the interrupted run in this folder (or a new folder)",
                file=gen,
                field=diff[0],
                found=f"{old.get(diff[0])!r} -> {settings.get(diff[0])!r}",
            )
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(gen, settings)


def sample(
    checkpoint: str | os.PathLike[str],
    n_jets: int,
    output: str | os.PathLike[str],
    *,
    progress: bool = False,
    **settings: Any,
) -> Path:
    """Sample ``n_jets`` jets from an NTP checkpoint into a native store at ``output``; returns it.

    Batch ``i`` draws from a generator seeded with ``(seed, i)``, so the same settings give the same
    jets and an interrupted run resumes at the first missing shard (shards are written atomically;
    a ``generation.json`` with the settings guards against mixing runs). Generated jets go to the
    ``test`` split. ``settings``: the other fields of :class:`SampleConfig` (the same names and
    defaults as ``jetfm sample``); an unknown one is a TypeError.
    """
    cfg = SampleConfig(checkpoint=Path(checkpoint), output=Path(output), n_jets=n_jets, **settings)
    return sample_from_config(cfg, progress=progress)


def sample_from_config(cfg: SampleConfig, *, progress: bool = False) -> Path:
    """:func:`sample` with a :class:`SampleConfig`."""
    folder = resolve_ntp_checkpoint(cfg.checkpoint)
    dev = _device(cfg.device)
    task = load_ntp(folder, dev)
    n_classes = int(task.config.n_classes)
    classes = _class_names(folder, n_classes) if n_classes > 0 else list(UNCONDITIONAL_CLASSES)
    _labels_for(cfg.class_label, classes, n_classes, 0, 1)  # fail early on a bad class
    guide_task = guide_folder = None
    if cfg.guide_checkpoint is not None:
        guide_folder = resolve_ntp_checkpoint(cfg.guide_checkpoint)
        guide_task = load_ntp(guide_folder, dev)
        task.check_guide(guide_task)
    guide = class_guidance(
        cfg.guidance, cfg.guide_against, classes, n_classes, guide_model=guide_task is not None
    )
    if guide is None:
        guide_task = None  # all weights 0: nothing to run it for
    if cfg.residual_temperature is not None and not task.config.factorised_head:
        raise ConfigError(
            "a model with two-level tokens (task.factorised_head) for residual_temperature",
            field="residual_temperature",
            found=f"{folder}: one draw per token",
        )
    if cfg.jet_temperature is not None and not task.n_jet_tokens:
        raise ConfigError(
            "a model with jet tokens for jet_temperature",
            field="jet_temperature",
            found=f"{folder}: no jet tokens",
        )
    bins = task.condition_bins(cfg.jet_condition) if cfg.jet_condition else None  # (m,)
    ref_labels = ref_bins = None
    if cfg.jet_condition_from is not None:
        ref_labels, ref_bins = reference_jet_bins(
            task, cfg.jet_condition_from, cfg.jet_condition_split, cfg.n_jets, classes, cfg.seed
        )
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    settings = {
        **{k: v for k, v in to_dict(cfg).items() if k not in ("overwrite", "device", "output")},
        "checkpoint": str(folder.resolve()),
        "checkpoint_hash": meta.get("content_hash"),
    }
    out = Path(cfg.output)
    _prepare_output(out, settings, cfg.overwrite)
    scfg = cfg.sampling()
    pre = resolve_preprocessing(task.tokenizer, None, _checkpoint_preprocessing(folder))
    batches_per_shard = max(1, cfg.shard_size // cfg.batch_size)
    jets_per_shard = batches_per_shard * cfg.batch_size
    n_shards = math.ceil(cfg.n_jets / jets_per_shard)
    todo = [k for k in range(n_shards) if not shard_exists(out, f"generated-{k:05d}")]
    from tqdm.auto import tqdm

    # per batch: a consistent run can take minutes per shard
    bar = tqdm(
        total=cfg.n_jets,
        initial=cfg.n_jets
        - sum(min(jets_per_shard, cfg.n_jets - k * jets_per_shard) for k in todo),
        desc="sample",
        unit="jet",
        disable=not progress,
    )
    t0 = time.perf_counter()
    made = draws = misfits = 0  # jets sampled in this call; consistent: draws, jets off their bins
    for k in todo:
        name = f"generated-{k:05d}"
        parts = []
        for j in range(batches_per_shard):
            start = k * jets_per_shard + j * cfg.batch_size
            n = min(cfg.batch_size, cfg.n_jets - start)
            if n <= 0:
                break
            lab = _labels_for(cfg.class_label, classes, n_classes, start, n)
            jet_bins = None if bins is None else bins.expand(n, -1)
            if ref_bins is not None and ref_labels is not None:
                jet_bins = ref_bins[start : start + n].to(dev)
                lab = ref_labels[start : start + n] if n_classes > 0 else None
            gen = seeded_generator(cfg.seed, start // cfg.batch_size)
            guided: dict[str, Any] = {}
            if guide is not None:
                weights, contrast = guide
                cls = np.zeros(n, np.int64) if lab is None else lab
                guided = {
                    "guidance": torch.as_tensor(weights[cls], device=dev),
                    "guide_labels": None
                    if contrast is None
                    else torch.as_tensor(contrast[cls], device=dev),
                    "guide_task": guide_task,
                }
            toks = task.sample_tokens(
                n,
                scfg,
                labels=None if lab is None else torch.as_tensor(lab, device=dev),
                generator=gen,
                jet_bins=jet_bins,
                consistent=cfg.consistent,
                max_redraws=cfg.max_redraws,
                bin_tolerance=cfg.bin_tolerance,
                **guided,
            )
            made += n
            bar.update(n)
            if toks.draws is not None and toks.consistent is not None:
                draws += int(toks.draws.sum())
                misfits += int((~toks.consistent).sum())
                bar.set_postfix(draws_per_jet=f"{draws / made:.2f}", off_bins=misfits)
            parts.append(
                decode_to_jets(
                    toks.ids,
                    toks.mask,
                    task.tokenizer,
                    pre,
                    labels=np.zeros(n, np.int64) if lab is None else lab,
                    jet_radius=cfg.jet_radius,
                    pt_scale=None if toks.pt_scale is None else toks.pt_scale.cpu().numpy(),
                )
            )
        batch = JetBatch.concatenate(parts)
        write_shard(out, name, batch, split="test", attrs={"seed": cfg.seed, "shard": k})
    bar.close()
    if progress and made:
        rate = made / max(time.perf_counter() - t0, 1e-9)
        msg = f"sample: {made} jets in this call, {cfg.n_jets} in the store ({rate:.1f} jets/s)"
        if cfg.consistent and draws:
            msg += f", {draws / made:.2f} draws per jet, {misfits} kept outside their bins"
        print(msg, flush=True)
    source = {
        "generator": "jetfm sample (next-token model)",
        "checkpoint": str(folder.resolve()),
        "tokenizer": str((folder / "tokenizer").resolve())
        if (folder / "tokenizer").is_dir()
        else None,
        "sampling": to_dict(scfg),
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "class_label": cfg.class_label,
        "jet_condition": dict(cfg.jet_condition),
        "jet_condition_from": None
        if cfg.jet_condition_from is None
        else f"{Path(cfg.jet_condition_from).resolve()} ({cfg.jet_condition_split})",
        "consistent": cfg.consistent,
        "max_redraws": cfg.max_redraws,
        "bin_tolerance": cfg.bin_tolerance,
        "guidance": cfg.guidance,
        "guide_against": cfg.guide_against,
        "guide_checkpoint": None if guide_folder is None else str(guide_folder.resolve()),
        "jet_axis": "particles generated around eta=0, phi=0; jet fields recomputed from constituents",
        "jet_radius": cfg.jet_radius,
    }
    finalize_store(out, classes=classes, source=source)
    return out


def reference_jet_bins(
    task: Any,
    store: str | os.PathLike[str],
    split: str,
    n_jets: int,
    classes: list[str],
    seed: int = 0,
    chunk: int = 4096,
) -> tuple[np.ndarray, Tensor]:
    """Labels (n,) and jet-token bins (n, J) of ``n_jets`` jets drawn at random (seeded; without
    replacement while the split has enough) from ``store``'s ``split``, binned as the model's
    training jets were (:meth:`~jetfm.tasks.ntp.NTPTask.bins_of_jets`, leading ``max_length``
    particles). ``classes`` are the model's: the store's class names must be among them."""
    if not task.n_jet_tokens:
        raise ConfigError(
            "a model with jet tokens for jet_condition_from",
            field="jet_condition_from",
            found="no jet tokens",
        )
    st = Store(store)
    batch = st.read(split)
    if batch.n_jets == 0:
        raise InputError(f"jets in split '{split}'", file=st.root, field="split", found=0)
    rng = np.random.default_rng(seed)
    pick = rng.choice(batch.n_jets, n_jets, replace=n_jets > batch.n_jets)
    batch = batch.select(pick)
    names = st.classes
    if task.config.n_classes > 0:
        missing = sorted({names[i] for i in np.unique(batch.jets["label"])} - set(classes))
        if missing:
            raise InputError(
                f"classes among the model's {classes}", file=st.root, field="label", found=missing
            )
        labels = np.array([classes.index(names[i]) for i in batch.jets["label"]], np.int64)
    else:
        labels = np.zeros(n_jets, np.int64)
    pre = resolve_preprocessing(task.tokenizer, None)
    dev = task.jet_edges.device
    out = [
        task.bins_of_jets(xt.to(dev), mt.to(dev)).cpu()
        for _, xt, mt in padded_chunks(batch, pre, task.config.max_length, chunk)
    ]
    return labels, torch.cat(out)


def _checkpoint_preprocessing(folder: Path) -> dict[str, Any] | None:
    p = folder / "preprocessing.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
