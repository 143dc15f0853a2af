"""Callbacks of the training loop: step checkpoints and a progress bar that shows jets/s."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf

from jetfm.train.resume import CHECKPOINTS, capture_rng, clean_stale, write_checkpoint


class StepCheckpoint(Callback):
    """Every ``every`` optimizer steps, and at the end of training, write a step folder.

    All ranks take part (their RNG states are gathered); rank 0 writes. ``save_model(folder,
    step)`` writes the model checkpoint folder(s) inside the step folder.
    """

    def __init__(
        self,
        run_dir: Path,
        every: int,
        keep_last: int,
        save_model: Callable[[Path, int], Any],
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.ckpt_root = Path(run_dir) / CHECKPOINTS
        self.every = every
        self.keep_last = keep_last
        self.save_model = save_model
        self.extra = extra or {}
        self.last_saved: int | None = None
        #: step folders written by this process (rank 0 only)
        self.written: list[Path] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            clean_stale(self.ckpt_root)
        # (Lightning's step counter is restored by the module's own hook, which runs after this)
        self.last_saved = getattr(pl_module, "start_step", trainer.global_step)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        step = trainer.global_step
        if step % self.every == 0 and step != self.last_saved:
            self.save(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self.last_saved:
            self.save(trainer, pl_module)
        trainer.strategy.barrier("jetfm-final-checkpoint")

    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Path | None:
        step = trainer.global_step
        rng = capture_rng()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            states: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(states, rng)
        else:
            states = [rng]
        self.last_saved = step
        if not trainer.is_global_zero:
            return None
        task = pl_module.task
        opt = trainer.optimizers[0]
        sched = trainer.lr_scheduler_configs[0].scheduler
        epoch, batch = pl_module.position
        folder = write_checkpoint(
            self.ckpt_root,
            step,
            save_model=lambda path: self.save_model(path, step),
            task_state=task.state_dict(),
            optimizer=opt.state_dict(),
            scheduler=sched.state_dict(),
            precision=trainer.precision_plugin.state_dict(),
            rng=states,
            epoch=epoch,
            batch=batch,
            world_size=trainer.world_size,
            extra=self.extra,
            keep_last=self.keep_last,
        )
        self.written.append(folder)
        return folder


class JetsProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar counting optimizer steps towards ``max_steps``, with jets/s."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.total = convert_inf(trainer.max_steps)
        self.train_progress_bar.initial = 0
        self.train_progress_bar.n = trainer.global_step
        self.train_progress_bar.set_description("train")

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, trainer.global_step - 1)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        rate = getattr(pl_module, "jets_per_second", 0.0)
        if rate:
            items["jets/s"] = f"{rate:.0f}"
        return items
