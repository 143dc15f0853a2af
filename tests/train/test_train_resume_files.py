"""Checkpoint folders: RNG capture/restore, atomic step folders, last pointer, pruning, safety."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from jetfm.core.errors import CheckpointError, InputError
from jetfm.train.resume import (
    CHECKPOINTS,
    LAST,
    OPTIMIZER,
    RNG,
    TRAINER_STATE,
    capture_rng,
    check_run_dir,
    clean_stale,
    isolated_rng,
    latest_checkpoint,
    list_checkpoints,
    load_training_state,
    restore_rng,
    write_checkpoint,
)


def _draws() -> tuple[list[float], list[float], list[float]]:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]  # noqa: NPY002


def test_rng_round_trip_through_weights_only_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)  # noqa: NPY002
    random.seed(3)
    np.random.randn()  # noqa: NPY002  (sets numpy's cached Gaussian)
    state = capture_rng()
    expected = _draws()
    torch.save([state], tmp_path / "rng.pt")
    _draws()  # move every stream on
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True)[0])
    assert _draws() == expected


def test_isolated_rng_leaves_streams_untouched() -> None:
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002
    random.seed(0)
    state = capture_rng()
    with isolated_rng():
        _draws()
    after = _draws()
    restore_rng(state)
    assert after == _draws()


def _write(root: Path, step: int, keep: int | None = None) -> Path:
    def save_model(p: Path) -> None:
        p.mkdir()
        (p / "weights.txt").write_text(str(step))

    return write_checkpoint(
        root / CHECKPOINTS,
        step,
        save_model=save_model,
        task_state={"w": torch.full((2,), float(step)), "tied": torch.ones(2)},
        optimizer={"state": {}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99), "params": [0]}]},
        scheduler={"last_epoch": step, "base_lrs": [0.1]},
        precision={},
        rng=[capture_rng(), capture_rng()],
        epoch=1,
        batch=step % 7,
        world_size=2,
        keep_last=keep,
    )


def test_step_folders_pointer_and_pruning(tmp_path: Path) -> None:
    for step in (10, 20, 30):
        _write(tmp_path, step, keep=2)
    root = tmp_path / CHECKPOINTS
    assert [s for s, _ in list_checkpoints(root)] == [20, 30]
    assert json.loads((root / LAST).read_text()) == {"step": 30, "folder": "step-0000030"}
    assert latest_checkpoint(tmp_path) == root / "step-0000030"
    st = load_training_state(latest_checkpoint(tmp_path))
    assert (st.global_step, st.epoch, st.batch, st.world_size) == (30, 1, 2, 2)
    assert torch.equal(st.task_state["w"], torch.full((2,), 30.0))
    assert st.optimizer["param_groups"][0]["betas"] == (0.9, 0.99)
    assert len(st.rng) == 2
    assert (root / "step-0000030" / "model" / "weights.txt").read_text() == "30"


def test_killed_write_leaves_no_step_folder(tmp_path: Path) -> None:
    _write(tmp_path, 10)

    def boom(p: Path) -> None:
        p.mkdir()
        raise KeyboardInterrupt  # stands in for a kill in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(
            tmp_path / CHECKPOINTS,
            20,
            save_model=boom,
            task_state={},
            optimizer={},
            scheduler={},
            precision={},
            rng=[],
            epoch=0,
            batch=0,
            world_size=1,
        )
    assert latest_checkpoint(tmp_path).name == "step-0000010"
    assert [s for s, _ in list_checkpoints(tmp_path / CHECKPOINTS)] == [10]
    # a SIGKILL would leave the temporary folder behind: it is ignored, then cleaned
    stale = tmp_path / CHECKPOINTS / ".step-0000020.tmp-123-abcd"
    (stale / TRAINER_STATE).mkdir(parents=True)
    assert latest_checkpoint(tmp_path).name == "step-0000010"
    clean_stale(tmp_path / CHECKPOINTS)
    assert not stale.exists()


def test_dangling_pointer_falls_back_to_newest_folder(tmp_path: Path) -> None:
    _write(tmp_path, 10)
    _write(tmp_path, 20)
    (tmp_path / CHECKPOINTS / LAST).write_text('{"step": 40, "folder": "step-0000040"}')
    assert latest_checkpoint(tmp_path).name == "step-0000020"


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    folder = _write(tmp_path, 10)
    torch.save({"x": Path("/etc")}, folder / TRAINER_STATE / RNG)  # an arbitrary class
    with pytest.raises(CheckpointError, match="unreadable trainer state"):
        load_training_state(folder)
    (folder / TRAINER_STATE / OPTIMIZER).unlink()
    with pytest.raises(CheckpointError, match=r"missing optimizer\.pt"):
        load_training_state(folder)


def test_fresh_run_refuses_a_folder_with_checkpoints(tmp_path: Path) -> None:
    assert check_run_dir(tmp_path, resume=True) is None  # nothing to resume: start fresh
    assert check_run_dir(tmp_path, resume=False) is None
    _write(tmp_path, 10)
    with pytest.raises(InputError, match=r"train\.output_dir"):
        check_run_dir(tmp_path, resume=False)
    assert check_run_dir(tmp_path, resume=True).name == "step-0000010"
