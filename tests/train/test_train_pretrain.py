"""pretrain(): YAML config -> store -> loader -> jetfm task -> fit -> run folder; then --resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jetfm.core.config import load_yaml
from jetfm.core.errors import ConfigError
from jetfm.data.features import Preprocessing
from jetfm.tasks import Task
from jetfm.train import latest_checkpoint, load_training_state, pretrain


def _config(tmp_path: Path, store: Path) -> Path:
    cfg = {
        "data": {"store": str(store), "feature_set": "kin3", "preprocessing_jets": 500},
        "loader": {"batch_size": 16, "max_particles": 32, "block_size": 64, "group_blocks": 2},
        "task": {
            "name": "mpm",
            "target": "regression",
            "backbone": {"dim": 16, "depth": 1, "heads": 2, "n_features": 3},
        },
        "train": {
            "output_dir": str(tmp_path / "run"),
            "max_steps": 3,
            "accelerator": "cpu",
            "devices": 1,
            "checkpoint_every": 2,
            "val_every": 2,
            "val_batches": 1,
            "log_every": 1,
            "progress_bar": False,
            "quiet": True,
        },
    }
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.filterwarnings("ignore:.*more than max_particles")
def test_pretrain_then_resume(tmp_path: Path, toy_store: Path) -> None:
    path = _config(tmp_path, toy_store)
    run = pretrain(path, [], resume=False)
    assert run == tmp_path / "run"
    saved = load_yaml(run / "config.yaml")
    assert saved["train"]["max_steps"] == 3 and saved["task"]["name"] == "mpm"
    pre = Preprocessing.load(run / "preprocessing.json")
    assert pre.feature_names == ("deta", "dphi", "log_pt")
    last = latest_checkpoint(run)
    assert last.name == "step-0000003"
    assert (last / "model" / "backbone" / "preprocessing.json").is_file()
    task = Task.from_pretrained(last / "model")
    assert task.name == "mpm"

    run2 = pretrain(path, ["train.max_steps=5"], resume=True)
    st = load_training_state(latest_checkpoint(run2))
    assert st.global_step == 5
    assert Preprocessing.load(run / "preprocessing.json").mean.tolist() == pre.mean.tolist()


def test_pretrain_checks_feature_count_before_training(tmp_path: Path, toy_store: Path) -> None:
    path = _config(tmp_path, toy_store)
    with pytest.raises(ConfigError, match=r"task\.backbone\.n_features"):
        pretrain(path, ["data.feature_set=full"], resume=False)
    assert not (tmp_path / "run" / "checkpoints").exists()
