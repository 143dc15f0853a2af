"""The one training loop: :func:`fit` trains any task; :func:`pretrain` is the run behind the CLI.

Lightning supplies devices, DDP, precision, logging and the progress bar. Checkpoints and resume are
jetfm's own (see :mod:`jetfm.train.resume`): Lightning's checkpoint files are pickles, while a
jetfm checkpoint loads without executing code, and its data position goes back into the loader
factory as ``(epoch, start_batch)`` so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from jetfm.core.config import load_config, save_config
from jetfm.core.errors import ConfigError
from jetfm.train.callbacks import JetsProgressBar, StepCheckpoint
from jetfm.train.config import PretrainConfig, TrainConfig
from jetfm.train.module import LoaderFactory, TaskModule
from jetfm.train.resume import (
    PROGRESS,
    TRAINER_STATE,
    check_run_dir,
    latest_checkpoint,
    load_training_state,
    resolve_task_checkpoint,
    seed_all,
)

log = logging.getLogger(__name__)

_START_METHODS = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}


@dataclass
class FitResult:
    """Where a finished :func:`fit` left things."""

    run_dir: Path
    checkpoint: Path | None  # the newest step folder (the final weights)
    global_step: int
    resumed_from: Path | None


def fit(
    task: nn.Module,
    train_loader_factory: LoaderFactory,
    val_loader_factory: LoaderFactory | None,
    cfg: TrainConfig,
    resume: bool = False,
    *,
    preprocessing: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    """Train ``task`` for ``cfg.max_steps`` optimizer steps, writing step folders to ``cfg.output_dir``.

    ``task`` needs ``loss(batch) -> dict`` (with ``"loss"``) and ``save_pretrained(folder, *,
    preprocessing, meta)``; the loader factories are called as ``factory(rank=, world_size=,
    epoch=, start_batch=)`` (see :class:`~jetfm.train.module.LoaderFactory`). With ``resume`` the
    newest checkpoint of ``cfg.output_dir`` is restored exactly: weights, optimizer, schedule,
    AMP scaler, RNG states of every rank and the data position. ``preprocessing`` and ``meta`` go
    into every saved model folder. With ``strategy: ddp_spawn`` the factories must be picklable.
    """
    run_dir = Path(cfg.output_dir)
    resume_from = check_run_dir(run_dir, resume)
    state = load_training_state(resume_from) if resume_from is not None else None
    if resume and state is None:
        log.info("%s: no checkpoint to resume from, starting a fresh run", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    validate = val_loader_factory is not None and cfg.val_every > 0
    module = TaskModule(
        task, cfg, train_loader_factory, val_loader_factory if validate else None, state
    )

    def save_model(path: Path, step: int) -> None:
        task.save_pretrained(path, preprocessing=preprocessing, meta={"step": step, **(meta or {})})

    ckpt = StepCheckpoint(
        run_dir, cfg.checkpoint_every, cfg.keep_last, save_model, extra={"seed": cfg.seed}
    )
    cbs: list[Callback] = [ckpt, *callbacks]
    if cfg.progress_bar:
        cbs.append(JetsProgressBar())
    loggers: list[Logger] = [CSVLogger(run_dir, name="logs")]
    if cfg.tensorboard:
        loggers.append(TensorBoardLogger(run_dir, name="tensorboard", default_hp_metric=False))

    with _quiet(cfg.quiet), _keep_torch_flags(), warnings.catch_warnings():
        # Lightning 2.6 still builds torch's deprecated LeafSpec (harmless version skew)
        warnings.filterwarnings(
            "ignore", message=r".*LeafSpec.* is deprecated", category=FutureWarning
        )
        # a task keeps its frozen tokenizer in eval mode on purpose
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        trainer = pl.Trainer(
            accelerator=cfg.accelerator,
            devices=cfg.devices,
            num_nodes=cfg.num_nodes,
            strategy=_strategy(cfg),
            precision=cfg.precision,
            max_steps=cfg.max_steps,
            max_epochs=-1,
            gradient_clip_val=cfg.grad_clip,
            gradient_clip_algorithm="norm",
            log_every_n_steps=cfg.log_every,
            val_check_interval=cfg.val_every if validate else None,
            check_val_every_n_epoch=None,
            limit_val_batches=(cfg.val_batches or 1.0) if validate else 0,
            num_sanity_val_steps=0,
            enable_checkpointing=False,
            enable_model_summary=not cfg.quiet,
            enable_progress_bar=cfg.progress_bar,
            callbacks=cbs,
            logger=loggers,
            deterministic=True if cfg.deterministic else None,
            use_distributed_sampler=False,
            default_root_dir=run_dir,
        )
        trainer.fit(module)
    last = latest_checkpoint(run_dir)
    step = trainer.global_step
    if last is not None:
        step = json.loads((last / TRAINER_STATE / PROGRESS).read_text())["global_step"]
    return FitResult(run_dir=run_dir, checkpoint=last, global_step=step, resumed_from=resume_from)


def _strategy(cfg: TrainConfig) -> Any:
    if cfg.strategy in _START_METHODS:
        return DDPStrategy(
            find_unused_parameters=cfg.find_unused_parameters,
            start_method=_START_METHODS[cfg.strategy],
        )
    return cfg.strategy


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Lower Lightning's informational messages ("GPU available: ...") to warnings only."""
    if not enabled:
        yield
        return
    names = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for n, level in old.items():
            logging.getLogger(n).setLevel(level)


@contextlib.contextmanager
def _keep_torch_flags() -> Iterator[None]:
    """Deterministic mode is global torch state: undo it after training (notebooks, test suites)."""
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    bench = torch.backends.cudnn.benchmark
    cudnn_det = torch.backends.cudnn.deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.benchmark = bench
        torch.backends.cudnn.deterministic = cudnn_det


# --------------------------------------------------------------------------- pre-training run
def pretrain(
    config_path: str | os.PathLike[str] | None, overrides: Sequence[str] = (), resume: bool = False
) -> Path:
    """Pre-train a task on a native store; returns the run folder.

    Reads the YAML config (plus ``key.sub=value`` overrides), fits the feature standardisation on
    the training split (or reuses the run folder's ``preprocessing.json``), builds the task with
    :func:`jetfm.tasks.build_task`, writes the resolved ``config.yaml`` and trains with :func:`fit`.
    """
    from jetfm.data.features import Preprocessing
    from jetfm.data.loader import make_dataloader
    from jetfm.data.store import Store
    from jetfm.tasks import build_task, parse_task_config

    file = None if config_path is None else str(config_path)
    cfg = load_config(PretrainConfig, config_path, list(overrides))
    task_name, task_cfg = parse_task_config(cfg.task, file=file)
    run_dir = Path(cfg.train.output_dir)
    check_run_dir(run_dir, resume)  # fail before touching any data
    store = Store(cfg.data.store)
    seed_all(cfg.train.seed)  # identical initial weights on every rank
    task = build_task(task_cfg, file=file)
    pre = _tokenizer_preprocessing(task, cfg, file)
    if pre is None:
        pre = _preprocessing(cfg, run_dir, store, Preprocessing)
    _check_n_features(task_cfg, pre.n_features, cfg.data.feature_set, file)
    init_meta: dict[str, Any] = {}
    if cfg.init_from is not None:
        # the checkpoint's jet-token bin edges (buffers) come with its weights, so its jet tokens
        # keep the meaning they were trained with: nothing is refitted on this run's store
        init_meta = {"init_from": init_weights(task, cfg.init_from, file=file)}
    elif task.needs_jet_statistics:
        task.fit_jet_statistics(_statistics_batches(store, pre, cfg))
    if rank_zero_only.rank == 0:
        save_config(cfg, run_dir / "config.yaml")
        pre.save(run_dir / "preprocessing.json")
    train_factory = functools.partial(
        make_dataloader, store.root, cfg.data.train_split, pre, cfg.loader
    )
    val_factory = None
    if cfg.data.val_split is not None:
        val_factory = functools.partial(
            make_dataloader, store.root, cfg.data.val_split, pre, cfg.loader
        )
    fit(
        task,
        train_factory,
        val_factory,
        cfg.train,
        resume=resume,
        preprocessing=pre.to_dict(),
        meta={
            "task": task_name,
            "data_hash": store.content_hash,
            "store": str(store.root),
            **init_meta,
        },
    )
    return run_dir


def init_weights(task: nn.Module, path: Path, *, file: str | None = None) -> dict[str, Any]:
    """Load a task checkpoint's weights into ``task`` (continued pre-training) and return what
    was loaded (folder, step, content hash) for the new run's metadata.

    The checkpoint must be the same task with the same architecture (every weight present, every
    shape equal) and, for a task with a tokenizer, the same tokenizer (by content hash): a token
    id means nothing under another tokenizer.
    """
    from jetfm.core.checkpoint import content_hash, load_checkpoint
    from jetfm.tasks.base import TASK_KIND, state_mismatch

    folder = resolve_task_checkpoint(path)
    ckpt = load_checkpoint(folder, kind=TASK_KIND)
    name = getattr(task, "name", None)
    if ckpt.config.get("name") != name:
        raise ConfigError(
            f"a '{name}' task checkpoint",
            file=file,
            field="init_from",
            found=f"{folder}: a '{ckpt.config.get('name')}' task",
        )
    tok_path = getattr(task, "tokenizer_path", None)
    if tok_path is not None and ckpt.meta.get("tokenizer_hash") != content_hash(tok_path):
        raise ConfigError(
            f"a checkpoint trained with the tokenizer {tok_path}",
            file=file,
            field="init_from",
            found=f"{folder}: tokenizer hash {ckpt.meta.get('tokenizer_hash')}",
        )
    problem = state_mismatch(task, ckpt.state_dict, optional="tokenizer.")
    if problem is not None:
        raise ConfigError(
            "weights of the same architecture as this run's task config",
            file=file,
            field="init_from",
            found=f"{folder / 'model.safetensors'}: {problem}",
        )
    task.load_state_dict(ckpt.state_dict, strict=False)
    return {
        "folder": str(folder.resolve()),
        "step": ckpt.meta.get("step"),
        "content_hash": ckpt.meta.get("content_hash"),
    }


def _preprocessing(cfg: PretrainConfig, run_dir: Path, store: Any, cls: Any) -> Any:
    """The run's standardisation: reused from the run folder if it matches, else fitted."""
    from jetfm.data.features import JET_KEYS, required_particle_fields, resolve_feature_names

    names = resolve_feature_names(cfg.data.feature_set)
    saved = run_dir / "preprocessing.json"
    if saved.is_file():
        pre = cls.load(saved)
        if tuple(pre.feature_names) == tuple(names) and (
            pre.max_particles == cfg.loader.max_particles
        ):
            return pre
    data = store.read(
        cfg.data.train_split,
        limit=cfg.data.preprocessing_jets,
        particle_fields=required_particle_fields(names),
        jet_fields=list(JET_KEYS),
    )
    return cls.for_set(names, max_particles=cfg.loader.max_particles).fit(data)


def _tokenizer_preprocessing(task: Any, cfg: PretrainConfig, file: str | None) -> Any:
    """The standardisation of the task's tokenizer, if it has one: its codes live in the space
    its own statistics define, so features standardised with statistics refitted on another
    store (or another subset) would be tokenized wrongly. None for a task without a tokenizer."""
    from jetfm.data.features import Preprocessing, resolve_feature_names

    tok_pre = getattr(getattr(task, "tokenizer", None), "preprocessing", None)
    if tok_pre is None:
        return None
    names = tuple(resolve_feature_names(cfg.data.feature_set))
    if tuple(tok_pre["feature_names"]) != names:
        raise ConfigError(
            f"the tokenizer's features {list(tok_pre['feature_names'])}",
            file=file,
            field="data.feature_set",
            found=f"{cfg.data.feature_set!r} = {list(names)}",
        )
    pre = Preprocessing.from_dict(tok_pre, source="<tokenizer preprocessing>")
    return Preprocessing(
        pre.feature_names, pre.mean, pre.std, max_particles=cfg.loader.max_particles
    )


def _statistics_batches(store: Any, pre: Any, cfg: PretrainConfig) -> Iterator[dict[str, Any]]:
    """Training batches (the loader's, so cut and standardised as in training) until
    ``data.preprocessing_jets`` jets have been seen, for :meth:`Task.fit_jet_statistics`."""
    from jetfm.data.loader import make_dataloader

    seen = 0
    for batch in make_dataloader(store.root, cfg.data.train_split, pre, cfg.loader):
        yield batch
        seen += int(batch["mask"].shape[0])
        if seen >= cfg.data.preprocessing_jets:
            return


def _check_n_features(task_cfg: Any, n_features: int, feature_set: str, file: str | None) -> None:
    backbone = getattr(task_cfg, "backbone", None)
    if backbone is None or getattr(backbone, "input", "features") == "tokens":
        return
    if backbone.n_features != n_features:
        raise ConfigError(
            f"{n_features} (the number of features of data.feature_set '{feature_set}')",
            file=file,
            field="task.backbone.n_features",
            found=backbone.n_features,
        )
