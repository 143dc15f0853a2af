"""Fixtures of the fine-tuning tests: a tiny MPM pre-training run and a tiny NTP backbone on toy jets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from jetfm.data.features import JET_KEYS, Preprocessing, required_particle_fields
from jetfm.data.loader import load_padded
from jetfm.data.store import Store
from jetfm.tasks import build_task
from jetfm.tokenizers import KMeansTokenizer, TokenizerConfig
from jetfm.train import pretrain

BACKBONE = {"dim": 16, "depth": 1, "heads": 2, "n_features": 3}


def quiet_train(output_dir: Path, **kw: object) -> dict:
    """The ``train:`` section of a quick CPU run."""
    return {
        "output_dir": str(output_dir),
        "max_steps": 3,
        "accelerator": "cpu",
        "devices": 1,
        "checkpoint_every": 100,
        "val_every": 0,
        "log_every": 1,
        "progress_bar": False,
        "quiet": True,
        **kw,
    }


@pytest.fixture(scope="session")
def toy_pre(toy_store: Path) -> Preprocessing:
    names = ("deta", "dphi", "log_pt")
    data = Store(toy_store).read(
        "train",
        limit=500,
        particle_fields=required_particle_fields(names),
        jet_fields=list(JET_KEYS),
    )
    return Preprocessing.for_set(names, max_particles=64).fit(data)


@pytest.fixture(scope="session")
def mpm_run(toy_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step masked-particle-modelling pre-training run folder (made by ``pretrain``)."""
    tmp = tmp_path_factory.mktemp("mpm")
    cfg = {
        "data": {"store": str(toy_store), "feature_set": "kin3", "preprocessing_jets": 500},
        "loader": {"batch_size": 32, "max_particles": 64, "block_size": 64, "group_blocks": 2},
        "task": {"name": "mpm", "target": "regression", "backbone": BACKBONE},
        "train": quiet_train(tmp / "run", max_steps=2),
    }
    (tmp / "mpm.yaml").write_text(yaml.safe_dump(cfg))
    return pretrain(tmp / "mpm.yaml", [])


@pytest.fixture(scope="session")
def ntp_model(
    toy_store: Path, toy_pre: Preprocessing, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An (untrained) next-token-prediction task folder with a k-means tokenizer on toy features."""
    tmp = tmp_path_factory.mktemp("ntp")
    d = load_padded(toy_store, "train", toy_pre, max_particles=64, limit=200)
    tok = KMeansTokenizer(TokenizerConfig(type="kmeans", codebook_size=8))
    tok.fit(d["x"][d["mask"]], seed=0)
    folder = tok.save_pretrained(tmp / "tok")
    torch.manual_seed(0)
    bb = {**BACKBONE, "causal": True, "input": "tokens"}
    task = build_task({"name": "ntp", "tokenizer": str(folder), "backbone": bb})
    return task.save_pretrained(
        tmp / "model", preprocessing=toy_pre.to_dict(), meta={"task": "ntp"}
    )
