"""The one training loop (Lightning-based), its checkpoint folders and exact resume.

``fit(task, train_loader_factory, val_loader_factory, cfg, resume)`` trains any task (an
``nn.Module`` with ``loss(batch) -> dict`` and ``save_pretrained``); ``pretrain(config, overrides,
resume)`` is the pre-training run the CLI calls.

Names are imported lazily: Lightning takes seconds to import, and code that only reads checkpoint
folders (``jetfm.train.resume``) or configs (``jetfm.train.config``) should not pay for it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataConfig": "jetfm.train.config",
    "OptimizerConfig": "jetfm.train.config",
    "PretrainConfig": "jetfm.train.config",
    "ScheduleConfig": "jetfm.train.config",
    "TrainConfig": "jetfm.train.config",
    "FitResult": "jetfm.train.loop",
    "fit": "jetfm.train.loop",
    "pretrain": "jetfm.train.loop",
    "LoaderFactory": "jetfm.train.module",
    "TaskModule": "jetfm.train.module",
    "TrainingState": "jetfm.train.resume",
    "latest_checkpoint": "jetfm.train.resume",
    "load_training_state": "jetfm.train.resume",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jetfm.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
