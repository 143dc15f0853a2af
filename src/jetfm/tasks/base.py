"""The task interface: backbone + head(s) + how to build a target from a batch and score it.

The training loop knows nothing about models (minGPT): it builds a task with :func:`build_task` from
the ``task:`` section of the run config and calls ``task.loss(batch)`` on each loader batch, a dict
with ``x`` (B, N, F) standardised features, ``mask`` (B, N) bool (True = real particle), ``label``
(B,) int64 and ``jet`` (B, 5). ``loss`` returns a dict holding ``"loss"`` (the scalar to minimise)
and detached scalar metrics to log.

A task section names its task and otherwise holds the fields of that task's config dataclass::

    task:
      name: mpm
      target: token
      tokenizer: runs/tok/tokenizer     # a tokenizer checkpoint folder
      backbone: {dim: 128, depth: 4, heads: 8}

A task never opens data files; the only file it reads is the frozen tokenizer it depends on.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor, nn

from jetfm.core.checkpoint import load_checkpoint, save_checkpoint
from jetfm.core.config import from_dict, to_dict
from jetfm.core.errors import ConfigError, InputError
from jetfm.models.backbone import Backbone

TASK_KIND = "task"


@runtime_checkable
class TokenizerLike(Protocol):
    """What a task needs from a tokenizer (see :class:`jetfm.tokenizers.base.Tokenizer`)."""

    @property
    def codebook_size(self) -> int: ...

    def encode(self, x: Tensor, mask: Tensor) -> Tensor: ...

    def decode(self, ids: Tensor, mask: Tensor | None = None) -> Tensor: ...


def load_tokenizer(path: str | os.PathLike[str]) -> TokenizerLike:
    """Load a frozen tokenizer checkpoint folder (any tokenizer type)."""
    from jetfm.tokenizers.base import Tokenizer

    return Tokenizer.from_pretrained(path)


def check_batch(
    batch: Mapping[str, Any], n_features: int | None, keys: tuple[str, ...] = ()
) -> None:
    """Raise InputError naming the field unless ``batch`` has ``x`` (B, N, F) and bool ``mask`` (B, N)."""
    for key in ("x", "mask", *keys):
        if key not in batch:
            raise InputError(
                f"a batch dict with key '{key}'", field=key, found=f"keys {sorted(batch)}"
            )
    x, mask = batch["x"], batch["mask"]
    if not isinstance(x, Tensor) or x.ndim != 3:
        raise InputError("a (B, N, F) tensor", field="x", found=getattr(x, "shape", type(x)))
    if n_features is not None and x.shape[-1] != n_features:
        raise InputError(
            f"{n_features} features per particle (backbone.n_features)",
            field="x",
            found=f"{x.shape[-1]} (shape {tuple(x.shape)})",
        )
    if not isinstance(mask, Tensor) or mask.shape != x.shape[:2] or mask.dtype != torch.bool:
        raise InputError(
            f"a bool mask of shape {tuple(x.shape[:2])}",
            field="mask",
            found=(getattr(mask, "shape", type(mask)), getattr(mask, "dtype", None)),
        )


class Task(nn.Module):
    """Base class: a backbone, head(s), an optional frozen tokenizer, and :meth:`loss`.

    Subclasses set :attr:`name` and :attr:`config_class` and are registered with
    :func:`register_task`. The tokenizer is a frozen submodule (moved with ``.to(device)``, kept in
    eval mode, never trained) and is left out of :meth:`save_pretrained`'s weights: it is saved as
    the checkpoint's ``tokenizer/`` folder instead.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object

    def __init__(self, config: Any, tokenizer: TokenizerLike | None = None) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer  # type: ignore[assignment]
        if isinstance(tokenizer, nn.Module):
            tokenizer.requires_grad_(False)
            tokenizer.eval()
        #: the tokenizer folder this task was built from (copied into saved checkpoints)
        self.tokenizer_path: Path | None = None
        self.backbone: Backbone

    def check_tokenizer_features(self, n_features: int) -> None:
        """Raise ConfigError if the tokenizer reads a different number of features than the data."""
        found = getattr(self.tokenizer, "n_features", None)
        if found is not None and int(found) != n_features:
            raise ConfigError(
                f"a tokenizer of {n_features} features (task.backbone.n_features)",
                field="task.tokenizer",
                found=f"a tokenizer of {found} features",
            )

    def train(self, mode: bool = True) -> Task:
        super().train(mode)
        if isinstance(self.tokenizer, nn.Module):
            self.tokenizer.eval()  # frozen: no dropout, no codebook updates
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser should update (the frozen tokenizer excluded)."""
        return [p for p in self.parameters() if p.requires_grad]

    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """``{"loss": scalar to minimise, <metric>: detached scalar, ...}`` for one batch."""
        raise NotImplementedError

    @property
    def needs_jet_statistics(self) -> bool:
        """True if :meth:`fit_jet_statistics` must see the training jets before the first step."""
        return False

    def fit_jet_statistics(self, batches: Iterable[Mapping[str, Any]]) -> None:
        """Fit statistics of the training jets the task keeps with its weights (e.g. bin edges).

        ``batches``: loader batches of training jets (as :meth:`loss` gets them), so the task
        measures the jets exactly as it sees them in training. Called once by pre-training before
        the first step; the default task fits nothing."""
        return None

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        return self.loss(batch)

    # ---------------------------------------------------------------- checkpoints
    def task_state_dict(self) -> dict[str, Tensor]:
        """Weights of backbone and heads, without the frozen tokenizer."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("tokenizer.")}

    def save_pretrained(
        self,
        path: str | os.PathLike[str],
        *,
        preprocessing: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Path:
        """Write ``path/backbone`` (a backbone checkpoint, for fine-tuning) and ``path/task``
        (backbone + heads + task config, for resuming or sampling) and return ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tok = self.tokenizer_path
        self.backbone.save_pretrained(
            path / "backbone", preprocessing=preprocessing, tokenizer=tok, meta=meta
        )
        cfg = {"name": self.name, **to_dict(self.config)}
        save_checkpoint(
            path / "task",
            self.task_state_dict(),
            cfg,
            kind=TASK_KIND,
            preprocessing=preprocessing,
            tokenizer=tok,
            meta={"task": self.name, **(meta or {})},
        )
        return path

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
    ) -> Task:
        """Rebuild a task from a folder written by :meth:`save_pretrained` (or its ``task/``)."""
        path = Path(path)
        folder = path / "task" if (path / "task").is_dir() else path
        ckpt = load_checkpoint(folder, kind=TASK_KIND)
        cfg = dict(ckpt.config)
        if ckpt.tokenizer_path is not None:
            cfg["tokenizer"] = str(ckpt.tokenizer_path)
        task = build_task(cfg, file=str(folder / "config.yaml"))
        if cls is not Task and not isinstance(task, cls):
            raise InputError(f"a '{cls.name}' task", file=folder, field="name", found=cfg["name"])
        problem = state_mismatch(task, ckpt.state_dict, optional="tokenizer.")
        if problem is not None:
            raise InputError(
                "weights matching the task config", file=folder / "model.safetensors", found=problem
            )
        task.load_state_dict(ckpt.state_dict, strict=False)
        return task.to(map_location)


def state_mismatch(
    module: nn.Module, state: Mapping[str, Tensor], *, optional: str | None = None
) -> str | None:
    """How saved weights ``state`` differ from ``module``'s (shapes, missing and unexpected names,
    three of each), or None when they load; names under the prefix ``optional`` (a frozen
    tokenizer, saved on its own) may be missing. Checked before loading, so a mismatch is a clear
    error rather than torch's size-mismatch traceback or a half-loaded module."""
    own = module.state_dict()
    shapes = [
        f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    missing = [
        k for k in own if k not in state and not (optional is not None and k.startswith(optional))
    ]
    unexpected = [k for k in state if k not in own]
    if not (shapes or missing or unexpected):
        return None
    return f"shapes {shapes[:3]}, missing {missing[:3]}, unexpected {unexpected[:3]}"


# -------------------------------------------------------------------- registry
TASKS: dict[str, type[Task]] = {}

T = TypeVar("T", bound=type[Task])


def register_task(name: str) -> Callable[[T], T]:
    """Class decorator: make a task buildable by name from a config section."""

    def deco(cls: T) -> T:
        cls.name = name
        TASKS[name] = cls
        return cls

    return deco


def _ensure_registered() -> None:
    # importing the modules registers their tasks
    import jetfm.tasks.classify
    import jetfm.tasks.mpm
    import jetfm.tasks.ntp  # noqa: F401


def parse_task_config(data: Mapping[str, Any], *, file: str | None = None) -> tuple[str, Any]:
    """Split a ``task:`` mapping into (name, typed config dataclass); unknown keys raise."""
    _ensure_registered()
    if not isinstance(data, Mapping):
        raise ConfigError("a mapping", file=file, field="task", found=type(data).__name__)
    data = dict(data)
    name = data.pop("name", None)
    if name not in TASKS:
        raise ConfigError(
            f"one of the task names {sorted(TASKS)}", file=file, field="task.name", found=repr(name)
        )
    return name, from_dict(TASKS[name].config_class, data, file=file, prefix="task")


def build_task(
    cfg: Mapping[str, Any] | Any,
    *,
    tokenizer: TokenizerLike | None = None,
    file: str | None = None,
) -> Task:
    """Build a task from a ``task:`` mapping (``name`` + config fields) or a task config dataclass.

    ``tokenizer`` overrides loading the config's ``tokenizer`` folder (tests, notebooks).
    """
    _ensure_registered()
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        matches = [c for c in TASKS.values() if isinstance(cfg, c.config_class)]
        if not matches:
            raise ConfigError(
                "a registered task config", file=file, field="task", found=type(cfg).__name__
            )
        task_cls, config = matches[0], cfg
    else:
        name, config = parse_task_config(cfg, file=file)
        task_cls = TASKS[name]
    tok_path = getattr(config, "tokenizer", None)
    if tokenizer is None and tok_path is not None:
        if not (Path(tok_path) / "model.safetensors").is_file():
            raise ConfigError(
                "a tokenizer checkpoint folder", file=file, field="task.tokenizer", found=tok_path
            )
        tokenizer = load_tokenizer(tok_path)
    task = task_cls(config, tokenizer=tokenizer)
    if tok_path is not None:
        task.tokenizer_path = Path(tok_path)
    return task
