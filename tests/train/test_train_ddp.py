"""DDP with 2 CPU processes (gloo): disjoint shards, identical weights on both ranks, and the same
result as one process with the doubled batch."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file, save_file

from jetfm.train import fit, load_training_state

from .tiny import SyntheticJets, TinyTask, tiny_config


class _SaveRankWeights(Callback):
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sd = {k: v.detach().clone() for k, v in pl_module.task.state_dict().items()}
        save_file(sd, str(self.folder / f"rank{trainer.global_rank}.safetensors"))


def test_ddp_two_cpu_processes_match_single_process(tmp_path: Path) -> None:
    steps = 6
    torch.manual_seed(0)
    cfg = tiny_config(
        tmp_path / "ddp",
        max_steps=steps,
        devices=2,
        strategy="ddp_fork",
        checkpoint_every=3,
        val_every=3,
        val_batches=2,
    )
    res = fit(
        TinyTask(dropout=0.0),
        SyntheticJets(batch_size=4),  # 4 jets per rank
        SyntheticJets(n_jets=32, batch_size=4, seed=1),
        cfg,
        callbacks=[_SaveRankWeights(tmp_path)],
    )
    w0 = load_file(str(tmp_path / "rank0.safetensors"))
    w1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    st = load_training_state(res.checkpoint)
    assert st.global_step == steps and st.world_size == 2 and len(st.rng) == 2
    assert not torch.equal(st.rng[0]["torch"], st.rng[1]["torch"])  # one RNG stream per rank

    torch.manual_seed(0)
    single = fit(
        TinyTask(dropout=0.0),
        SyntheticJets(batch_size=8),  # the union of both ranks' batches
        None,
        tiny_config(tmp_path / "single", max_steps=steps),
    )
    w = load_file(str(single.checkpoint / "trainer_state" / "task.safetensors"))
    ddp = load_file(str(res.checkpoint / "trainer_state" / "task.safetensors"))
    for k in w:
        assert torch.equal(ddp[k], w0[k])
        torch.testing.assert_close(ddp[k], w[k], rtol=1e-5, atol=1e-6)
    # and it is not what one rank's half batch alone would give
    torch.manual_seed(0)
    half = fit(
        TinyTask(dropout=0.0),
        SyntheticJets(batch_size=4),
        None,
        tiny_config(tmp_path / "half", max_steps=steps),
    )
    h = load_file(str(half.checkpoint / "trainer_state" / "task.safetensors"))
    assert max((h[k] - w[k]).abs().max().item() for k in w) > 1e-4
