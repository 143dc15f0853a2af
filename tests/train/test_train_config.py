"""TrainConfig / PretrainConfig: defaults, YAML round trip, errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from jetfm.core.config import load_config, save_config
from jetfm.core.errors import ConfigError
from jetfm.data.loader import LoaderConfig
from jetfm.train import PretrainConfig, TrainConfig


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    cfg = load_config(
        PretrainConfig,
        overrides=[
            "train.max_steps=7",
            "train.precision=bf16-mixed",
            "train.devices=2",
            "train.strategy=ddp",
            "train.optimizer.betas=[0.8, 0.95]",
            "train.schedule.name=onecycle",
            "loader.batch_size=64",
            "task.name=mpm",
        ],
    )
    assert cfg.train.max_steps == 7 and cfg.train.devices == 2
    assert cfg.train.optimizer.betas == (0.8, 0.95)
    assert isinstance(cfg.loader, LoaderConfig) and cfg.loader.batch_size == 64
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(PretrainConfig, tmp_path / "c.yaml")
    assert again == cfg


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("train.bogus=1", "train.bogus"),
        ("train.optimizer.lrr=0.1", "train.optimizer.lrr"),
        ("train.precision=16", "train.precision"),
        ("train.devices=two", "train.devices"),
        ("train.strategy=horovod", "train.strategy"),
        ("train.max_steps=0", "train.max_steps"),
        ("train.optimizer.betas=[0.9, 1.0]", "train.optimizer.betas[1]"),
        ("train.schedule.pct_start=1.5", "train.schedule.pct_start"),
        ("data.preprocessing_jets=1", "data.preprocessing_jets"),
    ],
)
def test_bad_values_name_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(PretrainConfig, overrides=[override])
    assert field in str(err.value)


def test_defaults_are_auto_devices() -> None:
    cfg = TrainConfig()
    assert cfg.devices == "auto" and cfg.strategy == "auto" and cfg.precision == "32-true"
    assert isinstance(cfg.output_dir, Path)
