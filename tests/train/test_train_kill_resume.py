"""A training process killed with SIGKILL and resumed ends with the weights of an uninterrupted run.

The killed run is a real separate process (forked, so it does not pay Lightning's import again);
the parent only sees what it left on disk. CPU, deterministic mode, one intra-op thread in both runs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from jetfm.train import fit, latest_checkpoint, load_training_state
from jetfm.train.config import ScheduleConfig

from .tiny import SyntheticJets, TinyTask, tiny_config

STEPS = 40  # 12 batches per epoch: the kill and the resume fall in different epochs


def _cfg(run_dir: Path):  # type: ignore[no-untyped-def]
    return tiny_config(
        run_dir,
        max_steps=STEPS,
        checkpoint_every=10,
        val_every=10,  # validates right after a checkpoint: must not shift the RNG
        val_batches=2,
        keep_last=2,
        schedule=ScheduleConfig(name="cosine", warmup_steps=5, min_lr_ratio=0.1),
    )


def _train(run_dir: Path, sleep: float, resume: bool = False, init_seed: int = 0) -> Path | None:
    torch.manual_seed(init_seed)
    res = fit(
        TinyTask(dropout=0.2, drop_particles=0.2, lr_factors={"embed.": 0.5}),
        SyntheticJets(sleep=sleep),
        SyntheticJets(n_jets=32, seed=1),
        _cfg(run_dir),
        resume=resume,
    )
    return res.checkpoint


def _child(run_dir: Path) -> None:
    torch.set_num_threads(1)
    _train(run_dir, sleep=0.1)


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        killed = tmp_path / "killed"
        proc = mp.get_context("fork").Process(target=_child, args=(killed,))
        proc.start()
        deadline = time.monotonic() + 120
        while latest_checkpoint(killed) is None:
            assert proc.is_alive(), f"training process died early (exit code {proc.exitcode})"
            assert time.monotonic() < deadline, "no checkpoint written in time"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        first = latest_checkpoint(killed)
        st = load_training_state(first)
        assert 10 <= st.global_step < STEPS, "the kill must interrupt the run"

        reference = _train(tmp_path / "reference", sleep=0.0)
        # a different initialisation: resuming must overwrite everything that matters
        resumed = _train(killed, sleep=0.0, resume=True, init_seed=99)
    finally:
        torch.set_num_threads(threads)

    assert resumed.name == reference.name == f"step-{STEPS:07d}"
    a = load_file(str(reference / "trainer_state" / "task.safetensors"))
    b = load_file(str(resumed / "trainer_state" / "task.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after kill + resume"
    ra, rb = load_training_state(reference), load_training_state(resumed)
    assert (ra.epoch, ra.batch) == (rb.epoch, rb.batch) == (3, 4)  # 40 = 3 * 12 + 4
    for k, v in ra.optimizer["state"][0].items():
        assert torch.equal(v, rb.optimizer["state"][0][k])
    assert [g["lr_factor"] for g in rb.optimizer["param_groups"]] == [1.0, 1.0, 0.5, 0.5]
