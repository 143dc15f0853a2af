"""Checkpoint folders of a training run, and everything needed to resume one exactly.

Layout of a run folder::

    <output_dir>/
      config.yaml                 the resolved run config (written by ``pretrain``)
      checkpoints/
        last.json                 {"step": 2000, "folder": "step-0002000"}, replaced atomically
        step-0002000/
          model/                  task.save_pretrained(): backbone/ + task/ checkpoint folders
          trainer_state/
            task.safetensors      every tensor of the task's state_dict (exact restore)
            optimizer.pt          optimizer, LR scheduler and AMP grad-scaler states
            rng.pt                torch / CUDA / numpy / python RNG states, one entry per rank
            progress.json         global step, data position (epoch, batch), world size
      logs/version_*/metrics.csv  CSV logs (tensorboard/ too when enabled)

A step folder is written under a temporary name and renamed when complete, so a killed process
leaves either a complete folder or a hidden ``.step-*.tmp-*`` one that is ignored (and removed by
the next run). ``*.pt`` files hold only tensors, numbers, strings and containers of those, and are
read back with ``torch.load(weights_only=True)``: loading a checkpoint never runs pickled code.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jetfm.core.atomic import atomic_path, write_json_atomic
from jetfm.core.errors import CheckpointError, InputError

CHECKPOINTS = "checkpoints"
LAST = "last.json"
MODEL = "model"
TRAINER_STATE = "trainer_state"
TASK_WEIGHTS = "task.safetensors"
OPTIMIZER = "optimizer.pt"
RNG = "rng.pt"
PROGRESS = "progress.json"
FORMAT = "jetfm-trainer-state"
FORMAT_VERSION = 1
_STEP_RE = re.compile(r"^step-(\d+)$")


def step_folder_name(step: int) -> str:
    return f"step-{step:07d}"


# --------------------------------------------------------------------------- RNG states
def capture_rng() -> dict[str, Any]:
    """The global RNG states of torch (CPU and initialised CUDA devices), numpy and python.

    Everything is a tensor, number or tuple, so the result saves with ``torch.save`` and loads
    with ``weights_only=True``.
    """
    kind, key, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the legacy global RNG is what we save)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            n["kind"],
            n["key"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


def seed_all(seed: int) -> None:
    """Seed torch (all devices), numpy's and python's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run a block without moving the CPU global RNG streams (torch, numpy, python).

    The training loop wraps data loading and validation in this: a DataLoader draws a seed from
    torch's global RNG whenever an iterator is created, and validation may draw random masks.
    Isolated, neither shifts the random numbers that training steps see, so a resumed run (which
    re-creates its iterators at other moments and skips the validation it already did) sees the
    same ones as an uninterrupted run.
    """
    t = torch.get_rng_state()
    n = np.random.get_state()  # noqa: NPY002 (the legacy global RNG is what we save)
    p = random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(t)
        np.random.set_state(n)  # noqa: NPY002
        random.setstate(p)


# --------------------------------------------------------------------------- writing
@dataclass
class TrainingState:
    """What :func:`load_training_state` returns."""

    path: Path
    global_step: int
    epoch: int
    batch: int  # batches of ``epoch`` already consumed (per rank): the loader's start_batch
    world_size: int
    task_state: dict[str, Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    precision: dict[str, Any]
    rng: list[dict[str, Any]]  # one per rank
    progress: dict[str, Any]


def write_checkpoint(
    ckpt_root: Path,
    step: int,
    *,
    save_model: Callable[[Path], Any],
    task_state: dict[str, Tensor],
    optimizer: dict[str, Any],
    scheduler: dict[str, Any],
    precision: dict[str, Any],
    rng: list[dict[str, Any]],
    epoch: int,
    batch: int,
    world_size: int,
    extra: dict[str, Any] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write ``ckpt_root/step-XXXXXXX`` atomically, point ``last.json`` at it, prune old ones.

    ``save_model(folder)`` writes the model checkpoint folder(s) (``task.save_pretrained``).
    """
    from safetensors.torch import save_file

    final = ckpt_root / step_folder_name(step)
    with atomic_path(final) as tmp:
        tmp.mkdir(parents=True)
        save_model(tmp / MODEL)
        ts = tmp / TRAINER_STATE
        ts.mkdir()
        # clone: safetensors refuses tensors that share memory (tied weights)
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in task_state.items()}
        save_file(tensors, str(ts / TASK_WEIGHTS), metadata={"format": FORMAT})
        torch.save(
            {"optimizer": optimizer, "scheduler": scheduler, "precision": precision},
            ts / OPTIMIZER,
        )
        torch.save(rng, ts / RNG)
        write_json_atomic(
            ts / PROGRESS,
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "global_step": step,
                "epoch": epoch,
                "batch": batch,
                "world_size": world_size,
                **(extra or {}),
            },
        )
    write_json_atomic(ckpt_root / LAST, {"step": step, "folder": final.name})
    if keep_last is not None:
        prune_checkpoints(ckpt_root, keep_last)
    return final


def list_checkpoints(ckpt_root: Path) -> list[tuple[int, Path]]:
    """Complete step folders, sorted by step."""
    if not ckpt_root.is_dir():
        return []
    out = []
    for p in ckpt_root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / TRAINER_STATE / PROGRESS).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def prune_checkpoints(ckpt_root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step folders (never the one ``last.json`` names)."""
    last = latest_checkpoint(ckpt_root.parent)
    for _, p in list_checkpoints(ckpt_root)[:-keep_last]:
        if last is None or p.resolve() != last.resolve():
            shutil.rmtree(p, ignore_errors=True)


def clean_stale(ckpt_root: Path) -> None:
    """Remove temporary folders and files left by a process killed while writing a checkpoint."""
    if ckpt_root.is_dir():
        for p in ckpt_root.glob(".*.tmp-*"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- reading
def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The step folder ``checkpoints/last.json`` points to (or the newest complete one), or None."""
    ckpt_root = Path(run_dir) / CHECKPOINTS
    pointer = ckpt_root / LAST
    if pointer.is_file():
        try:
            folder = ckpt_root / json.loads(pointer.read_text(encoding="utf-8"))["folder"]
        except (json.JSONDecodeError, KeyError, TypeError):
            folder = None
        if folder is not None and (folder / TRAINER_STATE / PROGRESS).is_file():
            return folder
    found = list_checkpoints(ckpt_root)
    return found[-1][1] if found else None


def resolve_task_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The ``task`` checkpoint folder behind a run folder (its newest step), a step folder, or a
    model/task folder: what sampling, evaluation and ``train.init_from`` accept."""
    p = Path(path)
    if (p / CHECKPOINTS).is_dir():
        step = latest_checkpoint(p)
        if step is None:
            raise InputError("a run folder with a finished checkpoint", file=p, found="none")
        p = step
    if (p / MODEL).is_dir():
        p = p / MODEL
    if (p / "task").is_dir():
        p = p / "task"
    if not (p / "model.safetensors").is_file() or not (p / "meta.json").is_file():
        raise InputError(
            "a run folder, step folder, or model/task checkpoint folder",
            file=path,
            found="no task checkpoint there",
        )
    return p


def load_training_state(folder: str | Path) -> TrainingState:
    """Read a step folder's ``trainer_state/`` (no pickled code is executed)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    ts = folder / TRAINER_STATE
    for name in (TASK_WEIGHTS, OPTIMIZER, RNG, PROGRESS):
        if not (ts / name).is_file():
            raise CheckpointError(f"{ts}: incomplete trainer state (missing {name})")
    progress = json.loads((ts / PROGRESS).read_text(encoding="utf-8"))
    if progress.get("format") != FORMAT or progress.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"format '{FORMAT}' version {FORMAT_VERSION}",
            file=ts / PROGRESS,
            field="format",
            found=f"{progress.get('format')!r} version {progress.get('format_version')!r}",
        )
    try:
        opt = torch.load(ts / OPTIMIZER, map_location="cpu", weights_only=True)
        rng = torch.load(ts / RNG, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unpickling error names what was refused
        raise CheckpointError(f"{ts}: unreadable trainer state ({exc})") from exc
    return TrainingState(
        path=folder,
        global_step=int(progress["global_step"]),
        epoch=int(progress["epoch"]),
        batch=int(progress["batch"]),
        world_size=int(progress["world_size"]),
        task_state=load_file(str(ts / TASK_WEIGHTS)),
        optimizer=opt["optimizer"],
        scheduler=opt["scheduler"],
        precision=opt["precision"],
        rng=list(rng),
        progress=progress,
    )


def check_run_dir(run_dir: str | Path, resume: bool) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run.

    A fresh run refuses a folder that already holds checkpoints (it would mix two runs); ``resume``
    on a folder without checkpoints starts fresh, so a pre-emptible job can always pass it.
    """
    run_dir = Path(run_dir)
    last = latest_checkpoint(run_dir)
    if last is not None and not resume:
        raise InputError(
            "an output folder without checkpoints (or --resume to continue that run)",
            file=run_dir,
            field="train.output_dir",
            found=f"checkpoint {last.name}",
        )
    return last if resume else None
