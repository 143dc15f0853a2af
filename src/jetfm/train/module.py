"""The LightningModule that wraps any task, and the iterables handed to Lightning.

The trainer knows nothing about the model (minGPT's rule): a task is an ``nn.Module`` with
``loss(batch) -> {"loss": scalar, <metric>: scalar, ...}`` and ``save_pretrained(folder, ...)``.
Data comes from *loader factories*: callables ``factory(rank=, world_size=, epoch=, start_batch=)``
returning an iterable of batch dicts, such as :func:`jetfm.data.loader.make_dataloader` with the
store bound. The factory is what makes resume exact: a run restarts its loader at the saved
``(epoch, start_batch)`` instead of replaying batches.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

import lightning.pytorch as pl
from torch import Tensor, nn

from jetfm.core.errors import InputError
from jetfm.tasks.base import state_mismatch
from jetfm.train.config import TrainConfig
from jetfm.train.optim import build_optimizer, build_scheduler
from jetfm.train.resume import TrainingState, capture_rng, isolated_rng, restore_rng, seed_all


class LoaderFactory(Protocol):
    """Makes the batches one rank sees in one epoch, starting at batch ``start_batch``.

    Different ranks must get disjoint data and the same number of batches; the order must depend
    only on the arguments (and the loader's own seed), never on global RNG state.
    """

    def __call__(
        self, *, rank: int, world_size: int, epoch: int, start_batch: int
    ) -> Iterable[Mapping[str, Any]]: ...


def batch_size(batch: Mapping[str, Any]) -> int:
    """Jets in a batch: the leading size of ``mask`` (or of the first tensor)."""
    t = batch.get("mask") if isinstance(batch, Mapping) else None
    if not isinstance(t, Tensor):
        t = next((v for v in batch.values() if isinstance(v, Tensor)), None)
    return int(t.shape[0]) if t is not None and t.ndim > 0 else 1


class EpochStream:
    """Endless training batches, epoch after epoch, each tagged ``(epoch, index, batch)``.

    Lightning sees one endless epoch and stops at ``max_steps``; the data epochs are ours, so the
    position of every batch is known exactly. Loader work runs under :func:`isolated_rng`.
    """

    def __init__(
        self, factory: LoaderFactory, *, rank: int, world_size: int, epoch: int, start_batch: int
    ) -> None:
        self.factory, self.rank, self.world_size = factory, rank, world_size
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[tuple[int, int, Mapping[str, Any]]]:
        epoch, start = self.epoch, self.start_batch
        while True:
            with isolated_rng():
                it = iter(
                    self.factory(
                        rank=self.rank, world_size=self.world_size, epoch=epoch, start_batch=start
                    )
                )
            index = start
            while True:
                with isolated_rng():
                    try:
                        batch = next(it)
                    except StopIteration:
                        break
                yield epoch, index, batch
                index += 1
            if index == 0:
                raise InputError(
                    "a training loader that yields at least one batch per epoch",
                    field="train loader",
                    found=f"no batches in epoch {epoch} on rank {self.rank}/{self.world_size}",
                )
            epoch, start = epoch + 1, 0


class ValStream:
    """The validation batches of one rank (loader work isolated from the training RNG)."""

    def __init__(self, factory: LoaderFactory, *, rank: int, world_size: int) -> None:
        self.factory, self.rank, self.world_size = factory, rank, world_size

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        with isolated_rng():
            it = iter(
                self.factory(rank=self.rank, world_size=self.world_size, epoch=0, start_batch=0)
            )
        while True:
            with isolated_rng():
                try:
                    batch = next(it)
                except StopIteration:
                    return
            yield batch


class TaskModule(pl.LightningModule):
    """Trains a task: ``training_step`` returns ``task.loss(batch)["loss"]`` and logs the rest."""

    def __init__(
        self,
        task: nn.Module,
        cfg: TrainConfig,
        train_factory: LoaderFactory,
        val_factory: LoaderFactory | None = None,
        resume_state: TrainingState | None = None,
    ) -> None:
        super().__init__()
        self.task = task
        self.cfg = cfg
        self.train_factory = train_factory
        self.val_factory = val_factory
        self.resume_state = resume_state
        #: the optimizer step training starts from (0, or the resumed checkpoint's step)
        self.start_step = resume_state.global_step if resume_state else 0
        #: (epoch, batches of that epoch consumed) after the last training step, per rank
        self.position: tuple[int, int] = (
            (resume_state.epoch, resume_state.batch) if resume_state else (0, 0)
        )
        self.jets_per_second: float = 0.0
        self._jets = 0
        self._t_last: float | None = None
        self._val_rng: dict[str, Any] | None = None

    # ------------------------------------------------------------------ data
    def train_dataloader(self) -> EpochStream:
        epoch, start = self.position
        return EpochStream(
            self.train_factory,
            rank=self.global_rank,
            world_size=self.trainer.world_size,
            epoch=epoch,
            start_batch=start,
        )

    def val_dataloader(self) -> ValStream | list[Any]:
        if self.val_factory is None:
            return []
        return ValStream(
            self.val_factory, rank=self.global_rank, world_size=self.trainer.world_size
        )

    # ------------------------------------------------------------------ setup and resume
    def setup(self, stage: str) -> None:
        s = self.resume_state
        if s is None:
            return
        if s.world_size != self.trainer.world_size:
            raise InputError(
                f"the same number of processes as the checkpointed run ({s.world_size}) to resume"
                " exactly",
                file=s.path,
                field="train.devices x train.num_nodes",
                found=self.trainer.world_size,
            )
        problem = state_mismatch(self.task, s.task_state)
        if problem is not None:
            raise InputError(
                "weights matching the task",
                file=s.path,
                field="trainer_state/task.safetensors",
                found=problem,
            )
        self.task.load_state_dict(s.task_state, strict=False)

    def configure_optimizers(self) -> dict[str, Any]:
        hook = getattr(self.task, "lr_factors", None)
        opt = build_optimizer(self.task, self.cfg.optimizer, hook() if callable(hook) else None)
        sched = build_scheduler(opt, self.cfg.schedule, self.cfg.max_steps)
        if self.resume_state is not None:
            opt.load_state_dict(self.resume_state.optimizer)
            sched.load_state_dict(self.resume_state.scheduler)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1},
        }

    def on_train_start(self) -> None:
        s = self.resume_state
        if s is None:
            # each rank its own stream (different dropout / masks on different data)
            seed_all(self.cfg.seed + self.global_rank)
        else:
            _set_global_step(self.trainer, s.global_step)
            if s.precision:
                self.trainer.precision_plugin.load_state_dict(s.precision)
            restore_rng(s.rng[self.global_rank])
        self._t_last = None

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: tuple[int, int, Mapping[str, Any]], batch_idx: int) -> Tensor:
        epoch, index, data = batch
        out = self.task.loss(data)
        loss = out["loss"]
        bs = batch_size(data)
        self.position = (epoch, index + 1)
        self._jets = bs * self.trainer.world_size
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=bs)
        for k, v in out.items():
            if k != "loss":
                self.log(f"train/{k}", _scalar(v), batch_size=bs)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        self.log("train/epoch", float(epoch), batch_size=bs)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._t_last is not None:
            rate = self._jets / max(now - self._t_last, 1e-9)
            # exponential average over ~20 steps: a readable, still responsive number
            a = 0.1 if self.jets_per_second else 1.0
            self.jets_per_second = (1 - a) * self.jets_per_second + a * rate
            self.log("train/jets_per_s", self.jets_per_second, batch_size=1)
        self._t_last = now

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        out = self.task.loss(batch)
        bs = batch_size(batch)
        for k, v in out.items():
            self.log(
                f"val/{k}",
                _scalar(v),
                on_step=False,
                on_epoch=True,
                sync_dist=True,
                batch_size=bs,
                prog_bar=k == "loss",
            )

    def on_validation_start(self) -> None:
        # validation never moves the training RNG streams, and sees the same random draws (masks)
        # every time, so its losses are comparable between evaluations
        self._val_rng = capture_rng()
        seed_all(self.cfg.seed + 1_000_003 + self.global_rank)

    def on_validation_end(self) -> None:
        if self._val_rng is not None:
            restore_rng(self._val_rng)
            self._val_rng = None
        self._t_last = None  # the validation time is not training throughput


def _scalar(v: Any) -> Any:
    if isinstance(v, Tensor):
        return v.detach().float().mean()
    return float(v)


def _set_global_step(trainer: pl.Trainer, step: int) -> None:
    """Put Lightning's progress counters where an uninterrupted run would be after ``step`` steps.

    One batch per optimizer step (no gradient accumulation), so batches == steps.
    """
    loop = trainer.fit_loop.epoch_loop
    total = loop.batch_progress.total
    total.ready = total.started = total.processed = total.completed = step
    optim = loop.automatic_optimization.optim_progress.optimizer
    optim.step.total.ready = optim.step.total.completed = step
    optim.zero_grad.total.ready = optim.zero_grad.total.started = step
    optim.zero_grad.total.completed = step
    loop._batches_that_stepped = step
    if trainer.global_step != step:  # pragma: no cover - a Lightning internals change
        raise RuntimeError(
            f"could not restore Lightning's step counter (wanted {step}, got {trainer.global_step})"
        )
