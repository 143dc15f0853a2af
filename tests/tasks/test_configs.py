"""The shipped task recipes parse into typed configs and build working tasks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jetfm.core.config import from_dict, load_yaml
from jetfm.tasks import MPMConfig, NTPConfig, build_task, parse_task_config
from jetfm.train.config import PretrainConfig

from .fakes import GridTokenizer, synthetic_batch

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_mpm_recipe_parses_and_trains_one_step() -> None:
    data = load_yaml(CONFIGS / "mpm.yaml")
    run = from_dict(PretrainConfig, data, file="mpm.yaml")
    name, cfg = parse_task_config(run.task, file="mpm.yaml")
    assert name == "mpm" and isinstance(cfg, MPMConfig)
    assert cfg.mask_fraction == 0.4 and cfg.backbone.n_features == 3
    task = build_task(cfg)
    out = task.loss(synthetic_batch(B=4, N=6))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("name", ["ntp.yaml", "ntp_gen8192.yaml"])
def test_ntp_recipes_parse(name: str) -> None:
    data = load_yaml(CONFIGS / name)
    run = from_dict(PretrainConfig, data, file=name)
    kind, cfg = parse_task_config(run.task, file=name)
    assert kind == "ntp" and isinstance(cfg, NTPConfig) and cfg.backbone.causal
    task = build_task(cfg, tokenizer=GridTokenizer())
    assert task.config.backbone.vocab_size == 16 + 2
    assert torch.isfinite(task.loss(synthetic_batch(B=4, N=6))["loss"])


def test_subjet_generation_recipe_parses() -> None:
    """configs/ntp_gen8192_subjets.yaml: jet tokens and subjet order need the tokenizer's
    standardisation (the grid tokenizer's stand-in here)."""
    from .test_ntp import GRID_PRE

    name = "ntp_gen8192_subjets.yaml"
    run = from_dict(PretrainConfig, load_yaml(CONFIGS / name), file=name)
    kind, cfg = parse_task_config(run.task, file=name)
    assert kind == "ntp" and isinstance(cfg, NTPConfig) and cfg.order == "subjets"
    task = build_task(cfg, tokenizer=GridTokenizer(preprocessing=GRID_PRE))
    assert task.config.backbone.vocab_size == 16 + 2 + 3 * 32
    task.fit_jet_statistics([synthetic_batch(seed=s) for s in range(4)])
    assert torch.isfinite(task.loss(synthetic_batch(B=4, N=6))["loss"])
