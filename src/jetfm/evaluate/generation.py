"""Jets from a next-token model: sample token sequences, decode them to particles, store, evaluate.

Pipeline of :func:`sample` (the library side of ``jetfm sample``)::

    NTP checkpoint --generate_tokens (KV cache)--> token ids (B, N) + mask
      --tokenizer.decode--> standardised features --Preprocessing.inverse_transform--> physical
      features (deta, dphi, log pT, ...) --features_to_kinematics--> particles (pT, eta, phi, E)
      --> native store (write_shard + finalize_store), jet fields recomputed from the constituents

**Jet axis of a generated jet.** The model's features are relative to the jet axis (``deta``,
``dphi``), so a generated jet has no absolute direction. Its particles are placed around
``eta = 0, phi = 0`` (the frame in which the model's features live; with ``log_pt`` the pT scale is
absolute). The stored jet fields (pt, eta, phi, mass, energy, tau21, tau32) are then *recomputed*
from the constituents (E-scheme sum, as for a clustered jet), so the stored axis is close to, but
not exactly, (0, 0): every downstream command treats generated jets exactly like simulated ones,
and any imbalance of the generated particles around the axis shows up in the metrics instead of
being hidden. Mass, pT, tau ratios and EFPs do not depend on the choice of frame (massless
particles: a shift in eta is a longitudinal boost). Particles are massless and stored pT-descending.

**Labels.** A class-conditional model samples the requested class (``class_label``), or, when none
is given, cycles through all classes (jet ``i`` gets class ``i mod n_classes``). An unconditional
model's jets get label 0 of the single class ``"generated"``.

**Evaluation** (:func:`evaluate_generation`): generated jets are compared with a simulated reference
sample with the metrics of :mod:`jetfm.evaluate.generative` (quantile-binned KL per jet observable,
W1M, W1P, W1EFP, FPD, KPD), each next to its *truth floor*: the same metric between two independent
reference samples of the same size (a second store or split, or else two random halves of the
reference). With the tokenizer at hand, tokenized-then-decoded reference jets are scored the same
way: they show how close a perfect token model could get. Jet eta/phi are not compared (generated
jets sit at eta ~ 0 by construction). By default the jet observables of *every* sample are computed
from massless constituents (``E = |p|``), because generated jets are massless by construction and
the hadron masses alone lower a top jet's mass by ~7% (see :func:`jet_sample_from_batch`).

Shapes: B jets, N particles, F features.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jetfm.core.atomic import write_json_atomic
from jetfm.core.config import to_dict
from jetfm.core.errors import ConfigError, InputError
from jetfm.data.features import Preprocessing, compute_features, features_to_kinematics
from jetfm.data.schema import JetBatch
from jetfm.data.store import MANIFEST, Store, finalize_store, shard_exists, write_shard
from jetfm.models.sampler import (
    SampledTokens,
    SamplingConfig,
    seeded_generator,
)
from jetfm.physics.jets import jet_four_momentum
from jetfm.physics.kinematics import ptetaphi_to_pxpypz, wrap_phi
from jetfm.physics.observables import nsubjettiness

GENERATION_JSON = "generation.json"
UNCONDITIONAL_CLASSES = ["generated"]
#: jet observables compared between generated and reference jets (eta/phi: see the module docstring)
EVAL_JET_OBSERVABLES = ("pt", "mass", "n_particles", "tau21", "tau32")
EVAL_PARTICLE_FEATURES = ("deta", "dphi", "pt_rel")


# ================================================================================= configs
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


@dataclass
class GenerationEvalConfig:
    """``jetfm evaluate-generation``: generated store vs simulated reference, with truth floors.

    ``reference2``: a second independent reference store for the floor (null: ``reference2_split``
    of the reference store, or, if that is null too, the reference split cut into two random halves).
    ``tokenizer``: tokenizer folder for the tokenized-then-decoded curve (null: the one inside the
    checkpoint recorded in the generated store's manifest, if any). ``n_jets``: jets per sample at
    most (null: as many as all three samples have).
    """

    generated: Path = Path("data/generated")
    reference: Path = Path("data/default")
    out_dir: Path = Path("runs/generation_eval")
    reference2: Path | None = None
    split: str = "test"
    reference2_split: str | None = None
    tokenizer: Path | None = None
    n_jets: int | None = None
    n_bins: int = 30  # quantile bins of the KL divergence
    num_batches: int = 5  # bootstrap batches of the W1 metrics
    seed: int = 0
    plots: bool = True
    massless: bool = True  # jet observables of every sample from massless constituents (E = |p|)
    # cut the reference jets to the sampler's max_length (highest-pT particles), as the generated and
    # tokenized jets are: a model capped at N particles is judged against what it can represent
    match_max_particles: bool = True

    def __post_init__(self) -> None:
        self.generated, self.reference, self.out_dir = (
            Path(self.generated),
            Path(self.reference),
            Path(self.out_dir),
        )
        if self.reference2 is not None:
            self.reference2 = Path(self.reference2)
        if self.tokenizer is not None:
            self.tokenizer = Path(self.tokenizer)
        if self.n_jets is not None and self.n_jets < 4:
            raise ConfigError("n_jets >= 4 or null", field="n_jets", found=self.n_jets)
        if self.n_bins < 1 or self.num_batches < 1:
            raise ConfigError(
                "n_bins >= 1 and num_batches >= 1",
                field="n_bins",
                found=(self.n_bins, self.num_batches),
            )


# ================================================================================= sampling
def sample_ntp_tokens(
    task: Any,
    n_jets: int,
    config: SamplingConfig | None = None,
    *,
    labels: Tensor | None = None,
    generator: torch.Generator | None = None,
    jet_bins: Tensor | None = None,
    consistent: bool = False,
    max_redraws: int = 10,
    bin_tolerance: int = 0,
    guidance: Tensor | None = None,
    guide_labels: Tensor | None = None,
    guide_task: Any = None,
) -> SampledTokens:
    """Sample token sequences from an :class:`~jetfm.tasks.ntp.NTPTask` (see ``generate_tokens``;
    ``jet_bins`` fixes leading jet tokens, ``consistent`` / ``max_redraws`` keep each jet in its
    drawn bins, see :meth:`~jetfm.tasks.ntp.NTPTask.sample_tokens`; ``guidance`` (B,) weights with
    ``guide_labels`` (B,) and / or ``guide_task``: guidance)."""
    n_classes = int(task.config.n_classes)
    if n_classes > 0 and labels is None:
        raise InputError(
            f"class labels in [0, {n_classes}) for a class-conditional model",
            field="labels",
            found=None,
        )
    if n_classes == 0 and labels is not None:
        raise InputError(
            "no labels (the model was trained without class conditioning)",
            field="labels",
            found="labels",
        )
    cfg = config or SamplingConfig()
    if task.config.position_embedding and cfg.max_length > task.config.max_length:
        raise InputError(
            f"max_length <= {task.config.max_length} (the model's position embedding ends there)",
            field="max_length",
            found=cfg.max_length,
        )
    extra: dict[str, Any] = {}
    if consistent:
        extra = {"consistent": True, "max_redraws": max_redraws, "bin_tolerance": bin_tolerance}
    if guidance is not None:
        extra.update(guidance=guidance, guide_labels=guide_labels, guide_task=guide_task)
    return task.sample_tokens(
        n_jets, cfg, labels=labels, generator=generator, jet_bins=jet_bins, **extra
    )


# ================================================================================= decoding
def resolve_preprocessing(
    tokenizer: Any,
    explicit: Preprocessing | dict[str, Any] | None = None,
    fallback: dict[str, Any] | None = None,
) -> Preprocessing:
    """The standardisation that maps a tokenizer's decoded features to physical units.

    ``explicit`` wins; else the tokenizer's own (saved in its folder, the space its decoder speaks);
    else ``fallback`` (e.g. the model checkpoint's preprocessing.json).
    """
    pre = explicit
    if pre is None:
        pre = getattr(tokenizer, "preprocessing", None) or fallback
    if pre is None:
        raise InputError(
            "a tokenizer saved with its preprocessing.json (to map tokens back to physical units)",
            field="preprocessing",
            found="none",
        )
    return pre if isinstance(pre, Preprocessing) else Preprocessing.from_dict(pre)


def _pid_from_features(x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Charge and a representative PDG id from decoded ``charge`` + type-flag features (flat (M, F)).

    The flag with the largest decoded value wins: charged hadron -> pi+-, neutral hadron -> K_L,
    photon, electron, muon (sign from the decoded charge; a charged type never gets charge 0).
    """
    from jetfm.physics.particles import PARTICLE_TYPES

    kind = np.argmax(np.stack([x[:, names.index(f)] for f in PARTICLE_TYPES], axis=1), axis=1)
    sign = np.where(x[:, names.index("charge")] < 0, -1, 1)
    pid = np.select(
        [kind == 0, kind == 1, kind == 2, kind == 3, kind == 4],
        [211 * sign, np.full_like(sign, 130), np.full_like(sign, 22), -11 * sign, -13 * sign],
    )
    charge = np.where(np.isin(kind, (1, 2)), 0, sign)
    return {"pid": pid.astype(np.int32), "charge": charge.astype(np.int8)}


def jets_from_particles(
    pt: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    mask: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    extra: dict[str, np.ndarray] | None = None,
    jet_radius: float = 0.8,
) -> JetBatch:
    """Padded massless particles (B, N) -> a validated :class:`JetBatch` with recomputed jet fields.

    Particles are sorted by decreasing pT within each jet; ``extra`` holds further padded particle
    fields (B, N) (charge, pid, d0, dz). Jet pt/eta/phi/mass/energy are the E-scheme constituent
    sum, tau21/tau32 N-subjettiness with radius ``jet_radius``. Every jet needs a real particle.
    """
    m = np.asarray(mask, dtype=bool)
    B = m.shape[0]
    counts = m.sum(axis=1)
    if np.any(counts == 0):
        raise InputError(
            "at least one particle per jet", field="mask", found=f"{int((counts == 0).sum())} empty"
        )
    jet_idx = np.repeat(np.arange(B), counts)
    flat = {"pt": np.asarray(pt, np.float64)[m], "eta": np.asarray(eta, np.float64)[m]}
    flat["phi"] = wrap_phi(np.asarray(phi, np.float64)[m])
    for k, v in (extra or {}).items():
        flat[k] = np.asarray(v)[m]
    order = np.lexsort((-flat["pt"], jet_idx))  # by jet, then pT descending
    flat = {k: v[order] for k, v in flat.items()}
    px, py, pz = ptetaphi_to_pxpypz(flat["pt"], flat["eta"], flat["phi"])
    energy = flat["pt"] * np.cosh(flat["eta"])  # massless
    offsets = np.zeros(B + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    particles = {"px": px, "py": py, "pz": pz, "energy": energy, **flat}
    four = jet_four_momentum(px, py, pz, energy, offsets)
    taus = nsubjettiness(px, py, pz, energy, offsets, n_max=3, R=jet_radius)
    jets = {k: four[k] for k in ("pt", "eta", "phi", "mass", "energy")}
    jets["n_particles"] = counts
    jets["label"] = np.zeros(B, np.int32) if labels is None else np.asarray(labels)
    jets["tau21"], jets["tau32"] = taus["tau21"], taus["tau32"]
    return JetBatch(offsets=offsets, particles=particles, jets=jets).cast().validate("<generated>")


def decode_to_jets(
    ids: Tensor,
    mask: Tensor,
    tokenizer: Any,
    preprocessing: Preprocessing | dict[str, Any] | None = None,
    *,
    labels: np.ndarray | None = None,
    jet_radius: float = 0.8,
    pt_scale: np.ndarray | None = None,
) -> JetBatch:
    """Token ids (B, N) + mask -> physical jets (see the module docstring for the jet axis).

    ``tokenizer.decode`` gives standardised features, ``preprocessing`` (default: the tokenizer's
    own) maps them back to physical units, :func:`features_to_kinematics` to (pT, eta, phi, E)
    around eta = phi = 0. With the ``full`` feature set, charge, a representative PDG id and the
    impact parameters are decoded as well. ``pt_scale`` (B,) multiplies each jet's particle pT
    (consistent sampling's fit of the jet pT to its drawn bin).
    """
    pre = resolve_preprocessing(tokenizer, preprocessing)
    names = list(pre.feature_names)
    if "log_pt" not in names:
        raise InputError(
            "tokenizer features including 'log_pt' (a generated jet has no pT to scale pT_rel by)",
            field="feature_names",
            found=names,
        )
    mask = mask.to(torch.bool)
    x = tokenizer.decode(ids.masked_fill(~mask, -1), mask)  # (B, N, F)
    x_phys = pre.inverse_transform(x.detach().cpu().numpy().astype(np.float64))
    zeros = np.zeros((x_phys.shape[0], 1))
    kin = features_to_kinematics(x_phys, names, zeros, zeros, zeros)
    m = mask.cpu().numpy()
    extra: dict[str, np.ndarray] = {}
    from jetfm.physics.particles import PARTICLE_TYPES

    if "charge" in names and all(f in names for f in PARTICLE_TYPES):
        flat = x_phys.reshape(-1, len(names))
        extra = {k: v.reshape(m.shape) for k, v in _pid_from_features(flat, names).items()}
        for ip in ("d0", "dz"):
            if f"tanh_{ip}" in names:
                t = np.clip(x_phys[..., names.index(f"tanh_{ip}")], -0.999999, 0.999999)
                extra[ip] = np.where(extra["charge"] != 0, np.arctanh(t), 0.0).astype(np.float32)
    pt = kin["pt"] if pt_scale is None else kin["pt"] * np.asarray(pt_scale, np.float64)[:, None]
    return jets_from_particles(
        pt, kin["eta"], kin["phi"], m, labels=labels, extra=extra, jet_radius=jet_radius
    )


def tokenize_and_decode(
    batch: JetBatch,
    tokenizer: Any,
    preprocessing: Preprocessing | dict[str, Any] | None = None,
    *,
    max_particles: int | None = None,
    jet_radius: float = 0.8,
    chunk: int = 4096,
) -> JetBatch:
    """Reference jets -> tokens -> decoded jets, through the same decoding path as generated jets.

    Jets keep their ``max_particles`` highest-pT particles (default: the preprocessing's), as the
    token model saw them in training. The result is what a perfect token model would generate.
    """
    pre = resolve_preprocessing(tokenizer, preprocessing)
    n_max = pre.max_particles if max_particles is None else int(max_particles)
    parts = []
    for rows, xt, mt in _padded_chunks(batch, pre, n_max, chunk):
        ids = tokenizer.encode(xt, mt)
        labels = batch.jets["label"][rows]
        parts.append(decode_to_jets(ids, mt, tokenizer, pre, labels=labels, jet_radius=jet_radius))
    return JetBatch.concatenate(parts)


def _padded_chunks(
    batch: JetBatch, pre: Preprocessing, n_max: int, chunk: int
) -> Iterator[tuple[slice, Tensor, Tensor]]:
    """A batch's standardised features in padded chunks of ``chunk`` jets: (jet rows, features
    (b, n_max, F) float32, mask (b, n_max)), each jet's leading ``n_max`` particles."""
    from jetfm.evaluate.generative import jagged_to_padded

    feats = pre.transform(compute_features(batch, pre.feature_names).astype(np.float64))
    for s in range(0, batch.n_jets, chunk):
        sub = batch.offsets[s : min(s + chunk, batch.n_jets) + 1]
        x, m = jagged_to_padded(feats[sub[0] : sub[-1]], sub - sub[0], n_max)
        yield (
            slice(s, s + len(sub) - 1),
            torch.as_tensor(x, dtype=torch.float32),
            torch.as_tensor(m),
        )


# ================================================================================= checkpoints
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
    batch_size: int = 256,
    temperature: float = 1.0,
    jet_temperature: float | None = None,
    residual_temperature: float | None = None,
    top_k: int = 0,
    top_p: float = 1.0,
    max_length: int = 128,
    min_length: int = 1,
    seed: int = 0,
    class_label: int | str | None = None,
    jet_condition: dict[str, float] | None = None,
    jet_condition_from: str | os.PathLike[str] | None = None,
    jet_condition_split: str = "train",
    consistent: bool = False,
    max_redraws: int = 10,
    bin_tolerance: int = 0,
    guidance: float | dict[str, float] = 0.0,
    guide_against: int | str | None = None,
    guide_checkpoint: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    head_dtype: str = "float32",
    device: str = "auto",
    shard_size: int = 10_000,
    jet_radius: float = 0.8,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Sample ``n_jets`` jets from an NTP checkpoint into a native store at ``output``; returns it.

    Batch ``i`` draws from a generator seeded with ``(seed, i)``, so the same settings give the same
    jets and an interrupted run resumes at the first missing shard (shards are written atomically;
    a ``generation.json`` with the settings guards against mixing runs). Generated jets go to the
    ``test`` split.
    """
    cfg = SampleConfig(
        checkpoint=Path(checkpoint),
        output=Path(output),
        n_jets=n_jets,
        batch_size=batch_size,
        temperature=temperature,
        jet_temperature=jet_temperature,
        residual_temperature=residual_temperature,
        top_k=top_k,
        top_p=top_p,
        max_length=max_length,
        min_length=min_length,
        seed=seed,
        class_label=class_label,
        jet_condition=dict(jet_condition or {}),
        jet_condition_from=None if jet_condition_from is None else Path(jet_condition_from),
        jet_condition_split=jet_condition_split,
        consistent=consistent,
        max_redraws=max_redraws,
        bin_tolerance=bin_tolerance,
        guidance=guidance,
        guide_against=guide_against,
        guide_checkpoint=None if guide_checkpoint is None else Path(guide_checkpoint),
        use_cache=use_cache,
        head_dtype=head_dtype,
        device=device,
        shard_size=shard_size,
        jet_radius=jet_radius,
        overwrite=overwrite,
    )
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
            toks = sample_ntp_tokens(
                task,
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
        for _, xt, mt in _padded_chunks(batch, pre, task.config.max_length, chunk)
    ]
    return labels, torch.cat(out)


def _checkpoint_preprocessing(folder: Path) -> dict[str, Any] | None:
    p = folder / "preprocessing.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


# ================================================================================= evaluation
def jet_sample_from_batch(
    batch: JetBatch, *, jet_radius: float = 0.8, massless: bool = True
) -> Any:
    """A :class:`~jetfm.evaluate.generative.JetSample` of a JetBatch: jet observables
    (pt, mass, n_particles, tau21, tau32) and padded particle features (deta, dphi, pt_rel)
    relative to the jet axis.

    ``massless`` (default): the jet four-momentum, axis and tau ratios are recomputed from the
    constituents with ``E = |p|``. Generated and tokenized jets are massless by construction (the
    kin3 features carry no particle mass), so comparing them with jets of massive hadrons would
    build in a model-independent shift: measured on the Pythia top/QCD sample, the massless jet
    mass is 7% below the stored one (median ratio 0.927). For generated jets this is a no-op.
    ``massless=False`` uses the stored jet fields (taus computed only when absent).
    """
    from jetfm.evaluate.generative import JetSample, jagged_to_padded

    p, j = batch.particles, batch.jets
    counts = batch.counts()
    if massless:
        e = np.sqrt(sum(p[k].astype(np.float64) ** 2 for k in ("px", "py", "pz")))
        axis = jet_four_momentum(p["px"], p["py"], p["pz"], e, batch.offsets)
        taus = nsubjettiness(p["px"], p["py"], p["pz"], e, batch.offsets, 3, jet_radius)
        jets = {"pt": axis["pt"], "mass": axis["mass"], "tau21": taus["tau21"]}
        jets["tau32"] = taus["tau32"]
    else:
        axis = {k: np.asarray(j[k], np.float64) for k in ("pt", "eta", "phi", "mass")}
        jets = {"pt": axis["pt"], "mass": axis["mass"]}
        if "tau21" in j and "tau32" in j:
            jets["tau21"], jets["tau32"] = (
                np.asarray(j[k], np.float64) for k in ("tau21", "tau32")
            )
        else:
            taus = nsubjettiness(
                p["px"], p["py"], p["pz"], p["energy"], batch.offsets, 3, jet_radius
            )
            jets["tau21"], jets["tau32"] = taus["tau21"], taus["tau32"]
    jets["n_particles"] = counts.astype(np.float64)
    rep = {k: np.repeat(np.asarray(axis[k], np.float64), counts) for k in ("pt", "eta", "phi")}
    feats = np.stack(
        [
            p["eta"].astype(np.float64) - rep["eta"],
            wrap_phi(p["phi"].astype(np.float64) - rep["phi"]),
            p["pt"].astype(np.float64) / rep["pt"],
        ],
        axis=1,
    )
    x, m = jagged_to_padded(feats, batch.offsets)
    return JetSample(jets=jets, particles=x, mask=m, particle_names=EVAL_PARTICLE_FEATURES)


def _single_threaded_blas() -> contextlib.AbstractContextManager:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _shuffled(batch: JetBatch, seed: int) -> JetBatch:
    return batch.select(np.random.default_rng(seed).permutation(batch.n_jets))


def _find_tokenizer(cfg: GenerationEvalConfig, generated: Store) -> Any:
    from jetfm.tokenizers import load_tokenizer

    path = cfg.tokenizer
    if path is None:
        rec = generated.manifest.get("source", {}).get("tokenizer")
        path = Path(rec) if rec else None
    if path is None or not (Path(path) / "model.safetensors").is_file():
        return None
    return load_tokenizer(path)


def _rows_table(rows: list[dict[str, Any]], title: str) -> list[str]:
    out = [
        f"**{title}**",
        "",
        "| metric | value | error | truth floor | floor error | value / floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for r in rows:
        ratio = f"{r['ratio']:.3g}"
        if not math.isfinite(r["ratio"]):
            ratio = "n/a"
            notes.append(
                f"{r['metric']}: the floor is <= 0 (an unbiased estimate of zero), so no ratio;"
                f" the value is {abs(r['value']) / max(r['error'], 1e-300):.2g} errors from zero."
            )
        out.append(
            f"| {r['metric']} | {r['value']:.4g} | {r['error']:.2g} | {r['floor']:.4g} | "
            f"{r['floor_error']:.2g} | {ratio} |"
        )
    return [*out, "", *[f"- {n}" for n in notes], *([""] if notes else [])]


def _plot_all(samples: dict[str, Any], out_dir: Path, ref_name: str) -> list[Path]:
    from jetfm.evaluate.plots import hist_with_ratio, save_figure

    paths = []
    labels = {
        "mass": "jet mass [GeV]",
        "pt": r"jet $p_T$ [GeV]",
        "n_particles": "constituents",
        "tau21": r"$\tau_{21}$",
        "tau32": r"$\tau_{32}$",
    }
    for obs, xlabel in labels.items():
        data = {k: s.jets[obs] for k, s in samples.items()}
        lo, hi = np.quantile(data[ref_name], [0.001, 0.999])
        if obs == "n_particles":
            bins = np.arange(math.floor(lo) - 0.5, math.ceil(hi) + 1.5, max(1, int(hi - lo) // 40))
        else:
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 41)
        fig = hist_with_ratio(data, bins, xlabel, reference=ref_name)
        paths.append(save_figure(fig, out_dir / f"jet_{obs}.png"))
    plabels = {
        "deta": r"particle $\Delta\eta$",
        "dphi": r"particle $\Delta\phi$",
        "pt_rel": r"particle $\log(p_T / p_T^{jet})$",
    }
    for name, xlabel in plabels.items():
        data = {}
        for k, s in samples.items():
            v = s.feature(name)[np.asarray(s.mask, bool)]
            data[k] = np.log(np.maximum(v, 1e-12)) if name == "pt_rel" else v
        lo, hi = np.quantile(data[ref_name], [0.001, 0.999])
        hi = hi if hi > lo else lo + 1.0
        fig = hist_with_ratio(data, np.linspace(lo, hi, 41), xlabel, reference=ref_name, logy=True)
        paths.append(save_figure(fig, out_dir / f"particle_{name}.png"))
    return paths


def evaluate_generation(
    generated_store: str | os.PathLike[str],
    reference_store: str | os.PathLike[str],
    *,
    reference2_store: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str],
    split: str = "test",
    reference2_split: str | None = None,
    tokenizer: str | os.PathLike[str] | Any | None = None,
    n_jets: int | None = None,
    n_bins: int = 30,
    num_batches: int = 5,
    seed: int = 0,
    plots: bool = True,
    massless: bool = True,
) -> dict[str, Any]:
    """Score generated jets against simulated ones, each metric next to its truth floor.

    Writes ``metrics.json``, ``metrics.md`` and (``plots``) PNG histograms with ratio panels to
    ``out_dir``; returns the summary dict (``generated``: rows of
    :func:`~jetfm.evaluate.generative.compare_with_floor`; ``tokenized``: the same for
    tokenized-then-decoded reference jets, or None without a tokenizer). All samples are shuffled
    (seeded) and cut to the same number of jets.
    """
    tok_obj = None
    tok_path = None
    if tokenizer is not None and not isinstance(tokenizer, str | os.PathLike):
        tok_obj = tokenizer
    elif tokenizer is not None:
        tok_path = Path(tokenizer)
    cfg = GenerationEvalConfig(
        generated=Path(generated_store),
        reference=Path(reference_store),
        out_dir=Path(out_dir),
        reference2=None if reference2_store is None else Path(reference2_store),
        split=split,
        reference2_split=reference2_split,
        tokenizer=tok_path,
        n_jets=n_jets,
        n_bins=n_bins,
        num_batches=num_batches,
        seed=seed,
        plots=plots,
        massless=massless,
    )
    return evaluate_generation_from_config(cfg, tokenizer=tok_obj)


def evaluate_generation_from_config(
    cfg: GenerationEvalConfig, *, tokenizer: Any | None = None
) -> dict[str, Any]:
    """:func:`evaluate_generation` with a :class:`GenerationEvalConfig` (``tokenizer``: an object)."""
    from jetfm.evaluate.generative import compare_with_floor, default_metrics

    gen_store = Store(cfg.generated)
    ref_store = Store(cfg.reference)
    radius = float(gen_store.manifest.get("source", {}).get("jet_radius", 0.8) or 0.8)
    gen = _shuffled(gen_store.read(), cfg.seed)
    ref_all = _shuffled(ref_store.read(cfg.split), cfg.seed + 1)
    if cfg.reference2 is not None:
        ref2_store = Store(cfg.reference2)
        ref2 = _shuffled(ref2_store.read(cfg.reference2_split or cfg.split), cfg.seed + 2)
        ref, floor_source = ref_all, f"store {cfg.reference2}"
    elif cfg.reference2_split is not None:
        if cfg.reference2_split == cfg.split:
            raise ConfigError(
                f"a split other than '{cfg.split}'",
                field="reference2_split",
                found=cfg.reference2_split,
            )
        ref2 = _shuffled(ref_store.read(cfg.reference2_split), cfg.seed + 2)
        ref, floor_source = ref_all, f"split '{cfg.reference2_split}' of {cfg.reference}"
    else:
        half = ref_all.n_jets // 2
        ref = ref_all.select(np.arange(half))
        ref2 = ref_all.select(np.arange(half, 2 * half))
        floor_source = f"the other random half of split '{cfg.split}' of {cfg.reference}"
    n = min(gen.n_jets, ref.n_jets, ref2.n_jets)
    if cfg.n_jets is not None:
        n = min(n, cfg.n_jets)
    if n < 4:
        raise InputError(
            "at least 4 jets in each sample",
            field="n_jets",
            found=(gen.n_jets, ref.n_jets, ref2.n_jets),
        )
    gen, ref, ref2 = (b.select(np.arange(n)) for b in (gen, ref, ref2))
    max_len = gen_store.manifest.get("source", {}).get("sampling", {}).get("max_length")
    if cfg.match_max_particles and max_len is not None:
        ref, ref2 = ref.truncate(int(max_len)), ref2.truncate(int(max_len))
    kw = {"jet_radius": radius, "massless": cfg.massless}
    s_gen = jet_sample_from_batch(gen, **kw)
    s_ref = jet_sample_from_batch(ref, **kw)
    s_ref2 = jet_sample_from_batch(ref2, **kw)
    metrics = default_metrics(s_ref, n_bins=cfg.n_bins, num_batches=cfg.num_batches, seed=cfg.seed)
    tok = tokenizer if tokenizer is not None else _find_tokenizer(cfg, gen_store)
    tok_rows = None
    samples = {"simulated": s_ref, "generated": s_gen}
    # FPD/KPD do thousands of tiny (36 x 36) linear-algebra calls: a multi-threaded BLAS spends
    # far longer synchronising its threads than computing (60x slower measured on a busy 2-core box)
    with _single_threaded_blas():
        rows = compare_with_floor(s_gen, s_ref, s_ref2, metrics)
        if tok is not None:
            # cut like the generated jets (the sampler's max_length), else like the tokenizer's data
            dec = tokenize_and_decode(ref2, tok, max_particles=max_len, jet_radius=radius)
            s_tok = jet_sample_from_batch(dec, **kw)
            tok_rows = compare_with_floor(s_tok, s_ref, s_ref2, metrics)
            samples["tokenized"] = s_tok
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "n_jets": int(n),
        "generated_store": str(cfg.generated),
        "reference_store": str(cfg.reference),
        "split": cfg.split,
        "truth_floor_from": floor_source,
        "massless": cfg.massless,
        "reference_cut_to_max_particles": max_len if cfg.match_max_particles else None,
        "generated": rows,
        "tokenized": tok_rows,
        "settings": to_dict(cfg),
    }
    plot_paths = _plot_all(samples, out, "simulated") if cfg.plots else []
    summary["plots"] = [str(p) for p in plot_paths]
    write_json_atomic(out / "metrics.json", summary)
    md = [
        f"### Generated jets vs simulation ({n} jets each; floor: {floor_source}"
        + (
            f"; reference jets cut to their {max_len} leading particles"
            if cfg.match_max_particles and max_len
            else ""
        )
        + ")",
        "",
        *_rows_table(rows, "generated vs simulated"),
    ]
    if tok_rows is not None:
        md += _rows_table(tok_rows, "tokenized-then-decoded vs simulated (the tokenizer's limit)")
    (out / "metrics.md").write_text("\n".join(md), encoding="utf-8")
    return summary
