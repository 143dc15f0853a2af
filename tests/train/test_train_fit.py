"""fit() in process: checkpoint folders, logs, validation, resume continuing a finished run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from jetfm.core.checkpoint import load_checkpoint
from jetfm.core.errors import InputError
from jetfm.train import fit, latest_checkpoint, load_training_state

from .tiny import SyntheticJets, TinyTask, tiny_config


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "trainer_state" / "task.safetensors"))


def test_fit_writes_step_folders_logs_and_validates(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    task = TinyTask()
    cfg = tiny_config(tmp_path / "run", max_steps=12, val_every=4, val_batches=2, progress_bar=True)
    res = fit(task, SyntheticJets(), SyntheticJets(n_jets=32, seed=1), cfg, preprocessing={"a": 1})
    out = capfd.readouterr()
    bar = out.out + out.err
    assert "12/12" in bar and "jets/s=" in bar and "val/loss=" in bar
    assert res.global_step == 12 and res.resumed_from is None
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    assert ckpts == ["step-0000010", "step-0000012"]  # every 5 steps + final, keep_last=2
    assert res.checkpoint == latest_checkpoint(tmp_path / "run")
    # the model folder is what task.save_pretrained wrote, loadable without the trainer
    model = load_checkpoint(res.checkpoint / "model" / "task", kind="tiny")
    assert model.preprocessing == {"a": 1} and model.meta["step"] == 12
    for k, v in task.state_dict().items():
        assert torch.equal(model.state_dict[k], v)
        assert torch.equal(_weights(res.checkpoint)[k], v)
    st = load_training_state(res.checkpoint)
    assert (st.global_step, st.epoch, st.batch) == (12, 0, 12)  # 96 jets / 8 = 12 batches
    assert st.scheduler["last_epoch"] == 12
    with open(tmp_path / "run" / "logs" / "version_0" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    train = [r for r in rows if r["train/loss"]]
    val = [r for r in rows if r["val/loss"]]
    assert len(train) == 12 and len(val) == 3  # validation after steps 4, 8, 12
    assert float(train[0]["train/lr"]) == pytest.approx(
        3e-4
    )  # cosine, no warm-up: full lr at step 0
    assert {"train/accuracy", "val/accuracy", "train/jets_per_s"} <= set(rows[0])
    # a fresh run must not overwrite these checkpoints
    with pytest.raises(InputError, match="resume"):
        fit(TinyTask(), SyntheticJets(), None, cfg)


def test_resume_extends_a_finished_run_exactly(tmp_path: Path) -> None:
    """12 steps (one full epoch), then resume to 14 == 14 steps straight."""
    data = SyntheticJets()

    def run(d: Path, steps: int, resume: bool = False) -> Path:
        torch.manual_seed(0)
        cfg = tiny_config(d, max_steps=steps, checkpoint_every=100)
        cfg.schedule.name = "constant"  # so the schedule does not depend on max_steps
        return fit(TinyTask(), data, None, cfg, resume=resume).checkpoint

    straight = run(tmp_path / "a", 14)
    first = run(tmp_path / "b", 12)
    assert (load_training_state(first).epoch, load_training_state(first).batch) == (0, 12)
    # corrupt the in-memory start: resume must replace weights, optimizer, RNG and position
    torch.manual_seed(123)
    resumed = run(tmp_path / "b", 14, resume=True)
    assert resumed.name == "step-0000014"
    st = load_training_state(resumed)
    assert (st.epoch, st.batch) == (1, 2)
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "b" / "checkpoints" / "last.json").read_text())["step"] == 14
    # resuming a finished run trains nothing and rewrites nothing
    stamp = (resumed / "trainer_state" / "progress.json").stat().st_mtime_ns
    assert run(tmp_path / "b", 14, resume=True) == resumed
    assert (resumed / "trainer_state" / "progress.json").stat().st_mtime_ns == stamp


def test_resume_refuses_another_world_size(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, max_steps=2)
    fit(TinyTask(), SyntheticJets(), None, cfg)
    prog = latest_checkpoint(tmp_path) / "trainer_state" / "progress.json"
    d = json.loads(prog.read_text())
    d["world_size"] = 2
    prog.write_text(json.dumps(d))
    cfg.max_steps = 4
    with pytest.raises(InputError, match="same number of processes"):
        fit(TinyTask(), SyntheticJets(), None, cfg, resume=True)


def test_bf16_mixed_precision_trains_and_resumes(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, max_steps=2, precision="bf16-mixed")
    fit(TinyTask(), SyntheticJets(), None, cfg)
    cfg.max_steps = 3
    res = fit(TinyTask(), SyntheticJets(), None, cfg, resume=True)
    assert res.global_step == 3 and res.resumed_from.name == "step-0000002"
    assert all(v.dtype == torch.float32 for v in _weights(res.checkpoint).values())
