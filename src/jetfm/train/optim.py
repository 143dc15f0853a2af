"""AdamW with weight decay on matrix weights only, and the learning-rate schedules.

Weight decay shrinks weights towards zero; that regularises the matrices of linear layers but only
hurts parameters whose scale carries meaning: biases, norm gains, embedding tables, learned tokens
(registers, mask vectors). The rule used here, in the spirit of nanoGPT's: a parameter decays iff
it is a ``weight`` of at least 2 dimensions that is not owned by an ``nn.Embedding`` and is not
named by the model's optional ``no_weight_decay()`` (a set of parameter names, timm's convention).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from jetfm.train.config import OptimizerConfig, ScheduleConfig


def split_decay(module: nn.Module) -> tuple[list[str], list[str]]:
    """Names of trainable parameters (with decay, without decay); frozen ones are left out."""
    extra = set()
    hook = getattr(module, "no_weight_decay", None)
    if callable(hook):
        extra = set(hook())
    decay, no_decay = [], []
    seen: set[int] = set()
    for mod_name, mod in module.named_modules():
        for leaf, p in mod.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))  # a tied parameter is optimised once, under its first name
            name = f"{mod_name}.{leaf}" if mod_name else leaf
            if (
                p.ndim >= 2
                and leaf.endswith("weight")
                and not isinstance(mod, nn.Embedding)
                and name not in extra
            ):
                decay.append(name)
            else:
                no_decay.append(name)
    return decay, no_decay


def build_optimizer(
    module: nn.Module, cfg: OptimizerConfig, lr_factors: Mapping[str, float] | None = None
) -> torch.optim.AdamW:
    """AdamW over ``module``'s trainable parameters, grouped by weight decay (and lr factor).

    ``lr_factors`` maps parameter-name prefixes to learning-rate multipliers (e.g. a smaller lr
    for a pre-trained backbone; the training loop passes the task's ``lr_factors()`` if it has
    one). Matching parameters get ``factor * lr`` in groups tagged ``lr_factor``, which the LR
    schedule scales like every other group; groups with factor 1 come first (the first group's lr
    is the one logged). Building the groups here, not after the fact, keeps the optimizer's layout
    identical on resume.
    """
    params = dict(module.named_parameters())
    decay, no_decay = split_decay(module)
    factors = dict(lr_factors or {})

    def factor(name: str) -> float:
        return next((f for prefix, f in factors.items() if name.startswith(prefix)), 1.0)

    groups: list[dict[str, Any]] = []
    for f in sorted({factor(n) for n in decay + no_decay}, key=lambda f: (f != 1.0, -f)):
        for names, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)):
            chosen = [params[n] for n in names if factor(n) == f]
            if chosen:
                group: dict[str, Any] = {"params": chosen, "weight_decay": wd, "lr": cfg.lr * f}
                if factors:
                    group["lr_factor"] = f
                groups.append(group)
    if not groups:
        raise ValueError("the task has no trainable parameters")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def lr_factor(cfg: ScheduleConfig, max_steps: int) -> Callable[[int], float]:
    """The multiplier of the base learning rate for the optimizer step with index ``step`` (0-based)."""

    def cosine(progress: float) -> float:  # 1 -> 0 as progress goes 0 -> 1
        return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))

    warm = cfg.warmup_steps

    def warmup(step: int) -> float | None:
        return (step + 1) / warm if step < warm else None

    if cfg.name == "constant":

        def factor(step: int) -> float:
            w = warmup(step)
            return 1.0 if w is None else w

    elif cfg.name == "cosine":
        floor = cfg.min_lr_ratio
        span = max(1, max_steps - warm)

        def factor(step: int) -> float:
            w = warmup(step)
            if w is not None:
                return w
            return floor + (1.0 - floor) * cosine((step - warm) / span)

    else:  # onecycle
        start = 1.0 / cfg.div_factor
        end = start / cfg.final_div_factor
        peak = max(1, round(cfg.pct_start * max_steps))
        down = max(1, max_steps - 1 - peak)

        def factor(step: int) -> float:
            if step < peak:  # cosine rise start -> 1
                return 1.0 + (start - 1.0) * cosine(step / peak)
            return end + (1.0 - end) * cosine((step - peak) / down)

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR (its state is plain numbers, so it saves without pickling code)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, max_steps))
