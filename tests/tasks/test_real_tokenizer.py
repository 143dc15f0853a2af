"""Tasks built from a real tokenizer checkpoint folder (k-means): build, train step, save, reload."""

from __future__ import annotations

import torch

from jetfm.tasks import MPMTask, NTPTask, Task, build_task
from jetfm.tokenizers import KMeansTokenizer, TokenizerConfig

from .fakes import synthetic_batch

BACKBONE = {"dim": 32, "depth": 1, "heads": 4}


def _kmeans_folder(tmp_path):
    b = synthetic_batch(B=64, N=12)
    tok = KMeansTokenizer(TokenizerConfig(type="kmeans", codebook_size=8))
    tok.fit(b["x"][b["mask"]], seed=0)
    return tok.save_pretrained(tmp_path / "tok")


def test_mpm_kmeans_from_folder_round_trip(tmp_path) -> None:
    folder = _kmeans_folder(tmp_path)
    torch.manual_seed(0)
    task = build_task(
        {"name": "mpm", "target": "kmeans", "tokenizer": str(folder), "backbone": BACKBONE}
    )
    assert isinstance(task, MPMTask) and task.head.proj.out_features == 8
    b = synthetic_batch(B=8, N=10)
    out = task.loss(b, generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    task.eval()
    run = task.save_pretrained(tmp_path / "run")
    assert (run / "backbone" / "tokenizer" / "model.safetensors").is_file()
    again = Task.from_pretrained(run).eval()
    assert isinstance(again, MPMTask)
    l1 = task.loss(b, generator=torch.Generator().manual_seed(1))["loss"]
    l2 = again.loss(b, generator=torch.Generator().manual_seed(1))["loss"]
    torch.testing.assert_close(l1, l2)


def test_ntp_from_folder_round_trip(tmp_path) -> None:
    folder = _kmeans_folder(tmp_path)
    torch.manual_seed(0)
    bb = {**BACKBONE, "causal": True, "input": "tokens"}
    task = build_task({"name": "ntp", "tokenizer": str(folder), "backbone": bb}).eval()
    assert task.config.backbone.vocab_size == 10
    run = task.save_pretrained(tmp_path / "run")
    again = NTPTask.from_pretrained(run).eval()
    b = synthetic_batch(B=8, N=10)
    torch.testing.assert_close(task.loss(b)["loss"], again.loss(b)["loss"])
    x, mask = again.generate_features(4, 6, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 6, 3) and mask[:, 0].all()
