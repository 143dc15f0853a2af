"""A small, seeded training driver for tokenizers.

Tokenizers sit below ``jetfm.train`` in the import order (they are trained before any backbone, and
backbones depend on them), so they have their own plain loop: AdamW, linear warm-up then cosine decay,
gradient clipping, a tqdm bar with loss / perplexity / dead-code replacements, periodic validation
(reconstruction MSE and codebook usage), and a checkpoint folder at the end. Runs on cpu, cuda or mps.

Data are padded dicts as :func:`jetfm.data.loader.load_padded` returns them (``x`` (J, N, F)
standardised, ``mask`` (J, N)), from which seeded random batches are drawn, or any iterable of such
batch dicts (e.g. a streaming DataLoader), which is cycled.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from jetfm.core.atomic import write_json_atomic
from jetfm.core.errors import InputError
from jetfm.tokenizers import build_tokenizer
from jetfm.tokenizers.base import Tokenizer
from jetfm.tokenizers.config import (
    QuantizerConfig,
    TokenizerConfig,
    TokenizerTrainConfig,
)
from jetfm.tokenizers.kmeans import KMeansTokenizer

__all__ = [
    "QuantizerConfig",
    "TokenizerConfig",
    "TokenizerTrainConfig",
    "evaluate_reconstruction",
    "resolve_device",
    "train_tokenizer",
]

Data = dict[str, Any] | Iterable[dict[str, Any]]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else mps if available, else cpu; anything else as given."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise InputError(
            "auto, cpu, cuda, cuda:N or mps", field="train.device", found=name
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("an available device", field="train.device", found=f"{name} (no CUDA)")
    return dev


def _check_padded(data: dict[str, Any], where: str, n_features: int) -> None:
    for key in ("x", "mask"):
        if key not in data:
            raise InputError(
                "a padded batch dict with 'x' and 'mask'", field=f"{where}.{key}", found="missing"
            )
    x, mask = data["x"], data["mask"]
    if x.ndim != 3 or x.shape[-1] != n_features or tuple(mask.shape) != tuple(x.shape[:2]):
        raise InputError(
            f"x (J, N, {n_features}) and mask (J, N)",
            field=where,
            found=(tuple(x.shape), tuple(mask.shape)),
        )


def _trim(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop padding columns beyond the longest jet of the batch (saves attention work)."""
    n = int(mask.sum(dim=1).max()) if mask.numel() else 0
    return x[:, : max(n, 1)], mask[:, : max(n, 1)]


def _batches(
    data: Data, batch_size: int, seed: int, n_features: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless stream of (x, mask) training batches."""
    if isinstance(data, dict):
        _check_padded(data, "train_data", n_features)
        x = torch.as_tensor(data["x"], dtype=torch.float32)
        mask = torch.as_tensor(data["mask"]).bool()
        n = x.shape[0]
        if n == 0:
            raise InputError("at least one training jet", field="train_data.x", found=0)
        gen = torch.Generator().manual_seed(seed)
        while True:
            perm = torch.randperm(n, generator=gen)
            for s in range(0, n, batch_size):
                idx = perm[s : s + batch_size]
                if len(idx) < min(batch_size, n):
                    break
                yield _trim(x[idx], mask[idx])
    else:
        while True:
            empty = True
            for b in data:
                _check_padded(b, "train_data batch", n_features)
                empty = False
                yield _trim(
                    torch.as_tensor(b["x"], dtype=torch.float32), torch.as_tensor(b["mask"]).bool()
                )
            if empty:
                raise InputError(
                    "a non-empty iterable of batches", field="train_data", found="no batches"
                )


def _first_padded(data: Data, limit: int, n_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``limit`` jets (0 = all) of ``data`` as one padded (x, mask)."""
    if isinstance(data, dict):
        _check_padded(data, "val_data", n_features)
        x = torch.as_tensor(data["x"], dtype=torch.float32)
        m = torch.as_tensor(data["mask"]).bool()
        return (x, m) if limit == 0 else (x[:limit], m[:limit])
    xs, ms, n = [], [], 0
    for b in data:
        _check_padded(b, "val_data batch", n_features)
        xs.append(torch.as_tensor(b["x"], dtype=torch.float32))
        ms.append(torch.as_tensor(b["mask"]).bool())
        n += xs[-1].shape[0]
        if limit and n >= limit:
            break
    if not xs:
        raise InputError("a non-empty iterable of batches", field="val_data", found="no batches")
    width = max(x.shape[1] for x in xs)
    x = torch.cat([torch.nn.functional.pad(x, (0, 0, 0, width - x.shape[1])) for x in xs])
    m = torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1])) for m in ms])
    return (x, m) if limit == 0 else (x[:limit], m[:limit])


@torch.no_grad()
def evaluate_reconstruction(
    tok: Tokenizer, x: torch.Tensor, mask: torch.Tensor
) -> dict[str, float]:
    """Encode + decode ``x`` (J, N, F): MSE per feature over real particles, codebook usage, perplexity."""
    ids = tok.encode(x, mask)
    rec = tok.decode(ids, mask)
    err = (rec[mask] - x[mask]) ** 2  # (M, F)
    counts = torch.bincount(ids[mask], minlength=tok.codebook_size).double()
    p = counts / counts.sum().clamp_min(1)
    ent = -(p[p > 0] * p[p > 0].log()).sum()
    names = tok.config.feature_names
    out = {"mse": float(err.mean())}
    out.update({f"mse_{n}": float(err[:, i].mean()) for i, n in enumerate(names)})
    out["codebook_used_fraction"] = float((counts > 0).double().mean())
    out["perplexity"] = float(ent.exp())
    return out


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _fit_kmeans(
    tok: KMeansTokenizer, data: Data, cfg: TokenizerTrainConfig, n_features: int
) -> None:
    limit = cfg.max_kmeans_particles
    gen = torch.Generator().manual_seed(cfg.seed)
    if isinstance(data, dict):
        _check_padded(data, "train_data", n_features)
        parts = torch.as_tensor(data["x"], dtype=torch.float32)[
            torch.as_tensor(data["mask"]).bool()
        ]
    else:
        chunks, n = [], 0
        for b in data:
            _check_padded(b, "train_data batch", n_features)
            chunks.append(
                torch.as_tensor(b["x"], dtype=torch.float32)[torch.as_tensor(b["mask"]).bool()]
            )
            n += chunks[-1].shape[0]
            if n >= limit:
                break
        parts = torch.cat(chunks) if chunks else torch.zeros(0, n_features)
    if parts.shape[0] > limit:
        parts = parts[torch.randperm(parts.shape[0], generator=gen)[:limit]]
    weights = tok.pt_weights(parts, cfg.kmeans_pt_weight) if cfg.kmeans_pt_weight else None
    tok.fit(parts, seed=cfg.seed, weights=weights)


def train_tokenizer(
    cfg: TokenizerConfig,
    train_data: Data,
    val_data: Data | None,
    preprocessing: Any,
    out_dir: str | os.PathLike[str],
    *,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Train a tokenizer of ``cfg.type`` and save it as a checkpoint folder at ``out_dir``.

    ``preprocessing`` is a :class:`jetfm.data.features.Preprocessing` (or its dict, or None) saved
    beside the weights so tokens can be decoded to physical units. Returns ``out_dir``; its
    ``meta.json`` holds the final validation metrics and ``train_history.json`` the logged curve.
    """
    from tqdm.auto import tqdm

    tcfg = cfg.train
    pre = preprocessing.to_dict() if hasattr(preprocessing, "to_dict") else preprocessing
    torch.manual_seed(tcfg.seed)
    device = resolve_device(tcfg.device)
    tok = build_tokenizer(cfg, preprocessing=pre).to(device)
    f = cfg.n_features
    history: list[dict[str, float]] = []
    val = _first_padded(val_data, tcfg.val_jets, f) if val_data is not None else None
    t0 = time.perf_counter()
    n_jets = 0
    if isinstance(tok, KMeansTokenizer):
        _fit_kmeans(tok, train_data, tcfg, f)
        steps_done = 0
    else:
        opt = torch.optim.AdamW(tok.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: _lr_factor(s, tcfg.warmup_steps, tcfg.steps)
        )
        stream = _batches(train_data, tcfg.batch_size, tcfg.seed, f)
        bar = tqdm(range(tcfg.steps), desc=f"tokenizer {cfg.type}", disable=not tcfg.progress)
        replaced = 0
        for step in bar:
            tok.train()
            x, mask = next(stream)
            x, mask = x.to(device), mask.to(device)
            out = tok(x, mask)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            if tcfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(tok.parameters(), tcfg.grad_clip)
            opt.step()
            sched.step()
            n_jets += x.shape[0]
            replaced += out.n_replaced
            bar.set_postfix(
                loss=f"{out.loss.item():.4f}", ppl=f"{out.perplexity.item():.0f}", dead=replaced
            )
            last = step + 1 == tcfg.steps
            if (step + 1) % tcfg.val_every == 0 or last:
                rec = {
                    "step": step + 1,
                    "loss": float(out.loss.detach()),
                    "recon_loss": float(out.recon_loss.detach()),
                    "perplexity_batch": float(out.perplexity),
                    "codes_replaced": replaced,
                }
                if val is not None:
                    tok.eval()
                    rec.update(
                        {f"val_{k}": v for k, v in evaluate_reconstruction(tok, *val).items()}
                    )
                history.append(rec)
        steps_done = tcfg.steps
    tok.eval()
    final = {f"val_{k}": v for k, v in evaluate_reconstruction(tok, *val).items()} if val else {}
    elapsed = time.perf_counter() - t0
    info = {
        "train_steps": steps_done,
        "train_seconds": round(elapsed, 2),
        "train_jets_per_second": round(n_jets / elapsed, 1) if n_jets else None,
        "device": str(device),
        **final,
    }
    info.update(meta or {})
    out = tok.save_pretrained(out_dir, meta=info)
    write_json_atomic(Path(out) / "train_history.json", history)
    return Path(out)
