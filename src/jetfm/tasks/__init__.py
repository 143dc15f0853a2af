"""Tasks: backbone + head(s) + how to build a target from a batch and compute the loss.

``build_task(cfg)`` turns the ``task:`` section of a run config into a task; the training loop only
calls ``task.loss(batch)``.
"""

from jetfm.tasks.base import (
    TASKS,
    Task,
    TokenizerLike,
    build_task,
    load_tokenizer,
    parse_task_config,
    register_task,
)
from jetfm.tasks.mpm import MPMConfig, MPMTask, choose_masked, pt_rank
from jetfm.tasks.ntp import IGNORE_ID, NTPConfig, NTPTask

__all__ = [
    "IGNORE_ID",
    "TASKS",
    "MPMConfig",
    "MPMTask",
    "NTPConfig",
    "NTPTask",
    "Task",
    "TokenizerLike",
    "build_task",
    "choose_masked",
    "load_tokenizer",
    "parse_task_config",
    "pt_rank",
    "register_task",
]
