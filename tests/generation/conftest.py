"""Fixtures of the generation tests: a real (k-means) tokenizer fitted on toy jets and tiny NTP models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jetfm.data.features import Preprocessing, compute_features
from jetfm.models import BackboneConfig
from jetfm.tasks.ntp import NTPConfig, NTPTask
from jetfm.tokenizers import KMeansTokenizer, TokenizerConfig
from tests.conftest import make_toy_jets

CODEBOOK = 16


@pytest.fixture(scope="session")
def kmeans_tokenizer() -> KMeansTokenizer:
    """A fitted k-means tokenizer (K = 16) on kin3 features of toy jets, with its preprocessing."""
    jets = make_toy_jets(200, seed=3)
    pre = Preprocessing.for_set("kin3", max_particles=64).fit(jets)
    x = torch.as_tensor(pre.transform(compute_features(jets, pre.feature_names)))
    cfg = TokenizerConfig(type="kmeans", codebook_size=CODEBOOK)
    tok = KMeansTokenizer(cfg, preprocessing=pre.to_dict()).fit(x, seed=0, iters=5)
    return tok.eval()


def make_task(
    tokenizer: KMeansTokenizer,
    *,
    n_classes: int = 0,
    input_kind: str = "tokens",
    n_registers: int = 0,
    seed: int = 0,
    **task: object,
) -> NTPTask:
    """An untrained tiny causal token model (mechanics tests need no training)."""
    torch.manual_seed(seed)
    bb = BackboneConfig(
        dim=32,
        depth=2,
        heads=4,
        causal=True,
        input=input_kind,
        n_features=3,
        n_registers=n_registers,
    )
    cfg = NTPConfig(backbone=bb, n_classes=n_classes, **task)  # type: ignore[arg-type]
    return NTPTask(cfg, tokenizer=tokenizer).eval()


@pytest.fixture(scope="session")
def ntp_checkpoint(tmp_path_factory: pytest.TempPathFactory, kmeans_tokenizer) -> Path:
    """A saved class-conditional NTP model folder (backbone/ + task/ with the tokenizer inside)."""
    root = tmp_path_factory.mktemp("ntp_ckpt")
    kmeans_tokenizer.save_pretrained(root / "tokenizer")
    task = make_task(kmeans_tokenizer, n_classes=2, seed=1)
    task.tokenizer_path = root / "tokenizer"
    pre = kmeans_tokenizer.preprocessing
    task.save_pretrained(root / "model", preprocessing=pre, meta={"step": 0})
    return root / "model"
