"""Typed configs of the training loop and of a pre-training run.

``TrainConfig`` says *how* to optimise (optimizer, schedule, precision, devices, checkpoints);
``PretrainConfig`` composes it with *what* to train on (data store, loader, task). Both are plain
dataclasses parsed by :mod:`jetfm.core.config`, so unknown keys and wrong types are errors that name
the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jetfm.core.errors import ConfigError
from jetfm.data.loader import LoaderConfig

Precision = Literal["32-true", "bf16-mixed", "16-mixed"]
ScheduleName = Literal["cosine", "onecycle", "constant"]


def _positive(value: float, field_name: str, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        raise ConfigError(
            "a number >= 0" if allow_zero else "a number > 0", field=field_name, found=value
        )


@dataclass
class OptimizerConfig:
    """AdamW. Weight decay applies to matrix weights only (never to biases, norms, embeddings)."""

    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        _positive(self.lr, "train.optimizer.lr")
        _positive(self.eps, "train.optimizer.eps")
        _positive(self.weight_decay, "train.optimizer.weight_decay", allow_zero=True)
        for i, b in enumerate(self.betas):
            if not 0.0 <= b < 1.0:
                raise ConfigError(
                    "a number in [0, 1)", field=f"train.optimizer.betas[{i}]", found=b
                )


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, stepped once per optimizer step.

    * ``cosine``: linear warm-up over ``warmup_steps`` to ``lr``, then cosine decay to
      ``min_lr_ratio * lr`` at ``max_steps``.
    * ``onecycle``: cosine rise from ``lr / div_factor`` to ``lr`` over the first ``pct_start`` of
      ``max_steps``, then cosine decay to ``lr / (div_factor * final_div_factor)`` (the shape of
      Smith's one-cycle policy; momentum is not cycled, ``betas`` stay as configured).
    * ``constant``: ``lr`` throughout (after the optional linear warm-up).
    """

    name: ScheduleName = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ConfigError(
                "an integer >= 0", field="train.schedule.warmup_steps", found=self.warmup_steps
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(
                "a number in [0, 1]", field="train.schedule.min_lr_ratio", found=self.min_lr_ratio
            )
        if not 0.0 < self.pct_start < 1.0:
            raise ConfigError(
                "a number in (0, 1)", field="train.schedule.pct_start", found=self.pct_start
            )
        _positive(self.div_factor, "train.schedule.div_factor")
        _positive(self.final_div_factor, "train.schedule.final_div_factor")


@dataclass
class TrainConfig:
    """How to train: steps, optimisation, precision, devices, logging and checkpoints.

    The same config runs on a laptop CPU and on N GPUs over M nodes: set ``devices``/``num_nodes``
    and ``strategy: ddp``. Batch sizes live in the loader config and are per rank, so the global
    batch is ``loader.batch_size * devices * num_nodes``.
    """

    output_dir: Path = Path("runs/pretrain")
    max_steps: int = 10_000
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    grad_clip: float | None = 1.0  # max global gradient norm; null disables clipping
    precision: Precision = "32-true"
    accelerator: str = "auto"  # "cpu", "gpu", "cuda", "mps", "auto"
    devices: int | str = "auto"  # number of devices per node, or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # "auto", "ddp", "ddp_spawn", "ddp_fork"
    find_unused_parameters: bool = False  # DDP: set true if a task leaves parameters unused
    log_every: int = 50  # steps between logged training metrics
    checkpoint_every: int = 1000  # steps between checkpoint folders (a final one is always written)
    keep_last: int = 3  # checkpoint folders kept (older ones are deleted)
    val_every: int = 1000  # steps between validations; 0 disables validation
    val_batches: int | None = 50  # batches per validation (null: the whole validation split)
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms(True): exact resume, slower
    tensorboard: bool = False  # CSV logs are always written; TensorBoard event files optionally
    progress_bar: bool = True
    quiet: bool = False  # silence Lightning's informational messages and the model summary

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ConfigError("an integer >= 1", field="train.max_steps", found=self.max_steps)
        for name in ("log_every", "checkpoint_every", "keep_last", "num_nodes"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    "an integer >= 1", field=f"train.{name}", found=getattr(self, name)
                )
        if self.val_every < 0:
            raise ConfigError("an integer >= 0", field="train.val_every", found=self.val_every)
        if self.val_batches is not None and self.val_batches < 1:
            raise ConfigError(
                "an integer >= 1 or null", field="train.val_batches", found=self.val_batches
            )
        if self.grad_clip is not None:
            _positive(self.grad_clip, "train.grad_clip")
        if isinstance(self.devices, str) and self.devices != "auto":
            raise ConfigError(
                "a number of devices or 'auto'", field="train.devices", found=repr(self.devices)
            )
        if isinstance(self.devices, int) and self.devices < 1:
            raise ConfigError("an integer >= 1", field="train.devices", found=self.devices)
        strategies = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "single_device")
        if self.strategy not in strategies:
            raise ConfigError(
                f"one of {list(strategies)}", field="train.strategy", found=repr(self.strategy)
            )
        self.output_dir = Path(self.output_dir)


@dataclass
class DataConfig:
    """Which native store, splits and particle features to train on (batching: ``loader``)."""

    store: Path = Path("data/default")
    train_split: str = "train"
    val_split: str | None = "val"  # null: no validation
    feature_set: str = "kin3"  # a name of jetfm.data.features.FEATURE_SETS
    preprocessing_jets: int = 50_000  # training jets used to fit the standardisation

    def __post_init__(self) -> None:
        self.store = Path(self.store)
        if self.preprocessing_jets < 2:
            raise ConfigError(
                "an integer >= 2", field="data.preprocessing_jets", found=self.preprocessing_jets
            )


@dataclass
class PretrainConfig:
    """A whole pre-training run: data + loader + task + training loop.

    ``task`` stays a mapping here (``name`` plus that task's fields) and is parsed by
    :func:`jetfm.tasks.parse_task_config`, which knows every registered task's dataclass and
    rejects unknown keys just the same.
    """

    data: DataConfig = field(default_factory=DataConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    task: dict[str, Any] = field(default_factory=lambda: {"name": "mpm", "target": "regression"})
    train: TrainConfig = field(default_factory=TrainConfig)
    # a task checkpoint (run, step, model or task folder) whose weights start this run: continued
    # pre-training on new data or for more steps, with a fresh optimizer and schedule. The
    # architecture and tokenizer must be the checkpoint's; null: random initial weights
    init_from: Path | None = None

    def __post_init__(self) -> None:
        if self.init_from is not None:
            self.init_from = Path(self.init_from)
