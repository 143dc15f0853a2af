"""The classification task: regimes, checkpoint resolution, NTP sequences, lr-factor groups, save/load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from jetfm.core.errors import ConfigError, InputError
from jetfm.models.backbone import BackboneConfig
from jetfm.tasks import NTPTask, Task
from jetfm.tasks.classify import (
    ClassifyConfig,
    ClassifyTask,
    backbone_sequence,
    load_classifier,
    resolve_backbone_dir,
)
from jetfm.train.config import OptimizerConfig, ScheduleConfig
from jetfm.train.finetune import (
    FinetuneConfig,
    build_classifier,
    load_pretrained,
)
from jetfm.train.optim import build_optimizer, build_scheduler

BB = BackboneConfig(dim=16, depth=1, heads=2, n_features=3)


def _batch(B: int = 6, N: int = 9, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(2, N + 1, (B,), generator=g)
    mask = torch.arange(N)[None] < n[:, None]
    x = torch.randn(B, N, 3, generator=g) * mask[..., None]
    return {"x": x, "mask": mask, "label": torch.arange(B) % 2}


def test_resolve_backbone_dir_accepts_every_folder_a_run_leaves(mpm_run: Path) -> None:
    last = sorted((mpm_run / "checkpoints").glob("step-*"))[-1]
    expect = last / "model" / "backbone"
    for p in (mpm_run, last, last / "model", expect, last / "model" / "task"):
        assert resolve_backbone_dir(p) == expect
    with pytest.raises(InputError, match="pretrained"):
        resolve_backbone_dir(mpm_run / "nope")


def test_regimes_set_gradient_flags_and_lr_factors() -> None:
    frozen = ClassifyTask(ClassifyConfig(backbone=BB, regime="frozen"))
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    assert all(p.requires_grad for p in frozen.head.parameters())
    frozen.train()
    assert frozen.training and not frozen.backbone.training  # frozen backbone: no dropout
    assert frozen.lr_factors() == {}
    ft = ClassifyTask(ClassifyConfig(backbone=BB, regime="finetune", backbone_lr_factor=0.1))
    assert all(p.requires_grad for p in ft.parameters())
    assert ft.lr_factors() == {"backbone.": 0.1}
    assert ClassifyTask(ClassifyConfig(backbone=BB, regime="scratch")).lr_factors() == {}
    # the optimizer of a frozen task holds the head only
    opt = build_optimizer(frozen, OptimizerConfig())
    n_opt = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in frozen.head.parameters())


def test_optimizer_gives_the_backbone_its_lr_factor() -> None:
    task = ClassifyTask(ClassifyConfig(backbone=BB, regime="finetune", backbone_lr_factor=0.1))
    opt = build_optimizer(task, OptimizerConfig(lr=1e-3), task.lr_factors())
    sched = build_scheduler(opt, ScheduleConfig(name="cosine", warmup_steps=4), max_steps=10)
    backbone = {id(p) for p in task.backbone.parameters()}
    for g in opt.param_groups:
        in_bb = {id(p) in backbone for p in g["params"]}
        assert len(in_bb) == 1  # a group is all backbone or all head
        f = 0.1 if in_bb.pop() else 1.0
        assert g["lr_factor"] == f
        assert g["lr"] == pytest.approx(1e-3 * f * 0.25)  # warm-up step 0: factor 1/4
    assert sorted(sched.base_lrs) == sorted(g["initial_lr"] for g in opt.param_groups)
    n = sum(len(g["params"]) for g in opt.param_groups)
    assert n == len(list(task.parameters()))
    for _ in range(4):
        opt.step()
        sched.step()
    lrs = sorted({round(g["lr"], 12) for g in opt.param_groups})
    assert lrs == pytest.approx([1e-4, 1e-3])  # end of warm-up: full lr, backbone a tenth


def test_logits_ignore_padding_and_particle_order() -> None:
    torch.manual_seed(0)
    task = ClassifyTask(
        ClassifyConfig(backbone=BB, n_classes=3, class_names=["a", "b", "c"])
    ).eval()
    b = _batch()
    ref = task.logits(b["x"], b["mask"])
    assert ref.shape == (6, 3)
    x_pad = torch.cat([b["x"], torch.randn(6, 4, 3)], dim=1)
    m_pad = torch.cat([b["mask"], torch.zeros(6, 4, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(task.logits(x_pad, m_pad), ref, atol=1e-5, rtol=1e-5)
    perm = torch.randperm(9)
    torch.testing.assert_close(
        task.logits(b["x"][:, perm], b["mask"][:, perm]), ref, atol=1e-5, rtol=1e-5
    )
    out = task.loss({**b, "label": torch.tensor([0, 1, 2, 0, 1, 2])})
    assert out["loss"].ndim == 0 and 0.0 <= float(out["accuracy"]) <= 1.0
    with pytest.raises(InputError, match="label"):
        task.loss({**b, "label": torch.full((6,), 3)})


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="n_classes"):
        ClassifyConfig(backbone=BB, n_classes=1)
    with pytest.raises(ConfigError, match="class_names"):
        ClassifyConfig(backbone=BB, n_classes=3, class_names=["a", "b"])
    with pytest.raises(ConfigError, match="sequence"):
        ClassifyConfig(backbone=dataclasses.replace(BB, input="tokens", vocab_size=10))
    with pytest.raises(ConfigError, match="pretrained"):
        FinetuneConfig(regime="frozen")
    with pytest.raises(ConfigError, match="bidirectional"):
        FinetuneConfig(pretrained=Path("x"), regime="frozen", bidirectional=True)
    with pytest.raises(ConfigError, match="backbone"):
        FinetuneConfig(regime="scratch")


def test_save_load_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(1)
    task = ClassifyTask(ClassifyConfig(backbone=BB, head="mean")).eval()
    task.save_pretrained(tmp_path / "clf", meta={"task": "classify"})
    again = load_classifier(tmp_path / "clf")
    b = _batch()
    assert torch.equal(task.logits(b["x"], b["mask"]), again.logits(b["x"], b["mask"]))
    assert isinstance(Task.from_pretrained(tmp_path / "clf"), ClassifyTask)


def test_ntp_backbone_reads_its_pretraining_sequence(ntp_model: Path) -> None:
    """Frozen features of a causal NTP backbone are exactly its pre-training hidden states."""
    parts = load_pretrained(ntp_model)
    assert backbone_sequence(parts.backbone) == "ntp" and parts.tokenizer is not None
    cfg = FinetuneConfig(pretrained=ntp_model, regime="frozen")
    clf = build_classifier(cfg, parts, ["QCD", "Tbqq"]).eval()
    ntp = NTPTask.from_pretrained(ntp_model).eval()
    b = _batch(N=8)
    h, m = clf.encode(b["x"], b["mask"])  # (B, N + 1, D)
    seq = ntp.build_sequences(b["x"], b["mask"])
    ref = ntp.backbone(None, seq["input_mask"], tokens=seq["inputs"])
    assert torch.equal(m, seq["input_mask"])
    torch.testing.assert_close(h, ref)
    # causal: changing the last real particle leaves the earlier positions unchanged
    n = int(b["mask"][0].sum())
    x2 = b["x"].clone()
    x2[0, n - 1] += 3.0  # the last particle, at sequence position n (after START)
    h2, _ = clf.encode(x2, b["mask"])
    torch.testing.assert_close(h2[0, :n], h[0, :n])
    assert not torch.allclose(h2[0, n], h[0, n])
    # bidirectional fine-tuning: the same weights, every position sees the whole jet
    bi = build_classifier(
        FinetuneConfig(pretrained=ntp_model, regime="finetune", bidirectional=True),
        parts,
        ["a", "b"],
    ).eval()
    assert not bi.config.backbone.causal
    hb, _ = bi.encode(b["x"], b["mask"])
    hb2, _ = bi.encode(x2, b["mask"])
    assert not torch.allclose(hb2[0, 0], hb[0, 0])


def test_pretraining_inputs_the_classifier_does_not_feed_are_named(
    ntp_model: Path, tmp_path: Path
) -> None:
    """A plain NTP backbone reads what it was trained on; jet tokens, decoded hybrid features and
    the task's position embedding are listed (finetune warns about them)."""
    import shutil

    import yaml

    from jetfm.train.finetune import pretraining_inputs_not_reproduced

    bdir = load_pretrained(ntp_model).backbone_dir
    assert bdir is not None and pretraining_inputs_not_reproduced(bdir) == []
    model = shutil.copytree(bdir.parent, tmp_path / "model")
    cfg_path = model / "task" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg.update(jet_tokens=["mass"], hybrid_features="decoded", position_embedding=True)
    cfg.update(fourier_input=True)
    cfg["backbone"]["input"] = "hybrid"
    cfg_path.write_text(yaml.safe_dump(cfg))
    found = pretraining_inputs_not_reproduced(model / "backbone")
    assert [f.split()[1] for f in found] == ["tokens", "hybrid", "position", "Fourier-feature"]
