"""Optimizer groups (no decay on biases, norms, embeddings, learned tokens) and LR schedules."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from jetfm.train.config import OptimizerConfig, ScheduleConfig
from jetfm.train.optim import build_optimizer, build_scheduler, lr_factor, split_decay


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.registers = nn.Parameter(torch.zeros(2, 4))  # a learned token table, not a matrix map
        self.attn = nn.MultiheadAttention(4, 2)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.out = nn.Linear(4, 10, bias=False)

    def no_weight_decay(self) -> set[str]:
        return {"out.weight"}


def test_split_decay() -> None:
    decay, no_decay = split_decay(_Model())
    assert sorted(decay) == ["attn.in_proj_weight", "attn.out_proj.weight", "proj.weight"]
    assert sorted(no_decay) == [
        "attn.in_proj_bias",
        "attn.out_proj.bias",
        "embed.weight",
        "norm.bias",
        "norm.weight",
        "out.weight",
        "proj.bias",
        "registers",
    ]


def test_optimizer_groups_carry_weight_decay() -> None:
    m = _Model()
    opt = build_optimizer(m, OptimizerConfig(lr=1e-3, weight_decay=0.05, betas=(0.8, 0.9)))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)
    n_trainable = sum(1 for p in m.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in opt.param_groups) == n_trainable


def test_cosine_with_warmup_hand_values() -> None:
    f = lr_factor(ScheduleConfig(name="cosine", warmup_steps=10, min_lr_ratio=0.1), max_steps=110)
    assert f(0) == pytest.approx(0.1)  # (0 + 1) / 10
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos(pi/2) = 0
    assert f(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert f(110) == pytest.approx(0.1)


def test_onecycle_hand_values() -> None:
    cfg = ScheduleConfig(name="onecycle", pct_start=0.25, div_factor=25, final_div_factor=1e4)
    f = lr_factor(cfg, max_steps=101)  # peak at step 25, end at step 100
    assert f(0) == pytest.approx(1 / 25)
    assert f(25) == pytest.approx(1.0)
    assert f(100) == pytest.approx(1 / 25 / 1e4)
    assert f(12) < f(13) < f(25) and f(26) > f(60) > f(99)


def test_scheduler_state_is_weights_only_loadable() -> None:
    m = nn.Linear(2, 2)
    opt = build_optimizer(m, OptimizerConfig(lr=0.1))
    sched = build_scheduler(opt, ScheduleConfig(name="cosine", warmup_steps=3), max_steps=20)
    for _ in range(5):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save({"s": sched.state_dict(), "o": opt.state_dict()}, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=True)
    opt2 = build_optimizer(m, OptimizerConfig(lr=0.1))
    sched2 = build_scheduler(opt2, ScheduleConfig(name="cosine", warmup_steps=3), max_steps=20)
    opt2.load_state_dict(back["o"])
    sched2.load_state_dict(back["s"])
    sched.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert opt.param_groups[0]["lr"] == pytest.approx(
        0.1 * lr_factor(ScheduleConfig(warmup_steps=3), 20)(6)
    )


def test_lr_factors_make_scaled_groups_that_the_schedule_keeps() -> None:
    m = _Model()
    opt = build_optimizer(m, OptimizerConfig(lr=1e-3, weight_decay=0.05), {"attn.": 0.1})
    assert [(g["lr_factor"], g["weight_decay"]) for g in opt.param_groups] == [
        (1.0, 0.05),
        (1.0, 0.0),
        (0.1, 0.05),
        (0.1, 0.0),
    ]
    assert len(opt.param_groups[2]["params"]) == 2  # attn.in_proj_weight, attn.out_proj.weight
    sched = build_scheduler(opt, ScheduleConfig(name="cosine", warmup_steps=4), max_steps=10)
    for _ in range(6):
        opt.step()
        sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[0] == pytest.approx(1e-3 * lr_factor(ScheduleConfig(warmup_steps=4), 10)(6))
    assert lrs[2] == pytest.approx(0.1 * lrs[0])
