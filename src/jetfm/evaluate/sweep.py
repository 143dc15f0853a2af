"""Data-efficiency sweep: labelled-set size x regime x seed, scored on one fixed test set.

Every grid cell fine-tunes one classifier (:func:`jetfm.train.finetune.finetune`) on the first
``n_labels`` jets (class-balanced) of a permutation of the training split seeded by the cell's seed,
and scores it on the same test jets (the store's test split, disjoint from training by
construction). A cell writes ``cells/<regime>-n<N>-s<seed>/result.json`` atomically as its very last
step, so a rerun skips finished cells and redoes an interrupted one from the start.

Outputs in ``output_dir``: ``summary.json`` (one row per regime and size: mean, std and number of
seeds of accuracy, AUC, 1/eps_B at eps_S = 0.5 and 0.3), ``summary.md`` (the same as a Markdown
table), ``accuracy_vs_labels.png``/``auc_vs_labels.png``/``rej_50_vs_labels.png`` and
``roc_n<N>.png`` (seed-0 ROC curves of every regime at the largest size).

Steps per cell: ``epochs`` passes over the labelled set (at least ``min_steps``, at most
``finetune.train.max_steps``), so small labelled sets are not over-trained into noise and large
ones are not under-trained.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jetfm.core.atomic import write_json_atomic, write_text_atomic
from jetfm.core.config import save_config
from jetfm.core.errors import ConfigError, InputError
from jetfm.data.store import Store
from jetfm.evaluate.metrics import aggregate_seeds, format_mean_std, pair_scores, roc_curve
from jetfm.evaluate.plots import metric_vs_labels, roc_curves, save_figure
from jetfm.evaluate.predict import classifier_preprocessing, evaluate_scores, score
from jetfm.tasks.classify import REGIMES, load_classifier
from jetfm.train.finetune import (
    FinetuneConfig,
    LabelledJets,
    balanced_subset,
    class_map,
    finetune,
    load_labelled,
    load_pretrained,
    split_labels,
)

log = logging.getLogger(__name__)

METRICS: tuple[str, ...] = ("accuracy", "auc", "pair_auc", "rej_50", "rej_30")
RESULT = "result.json"
SCORES = "scores.npz"


@dataclass
class SweepConfig:
    """A data-efficiency grid on top of one fine-tuning config.

    ``finetune`` is the template of every cell: its ``regime``, ``data.n_labels``,
    ``data.label_seed``, ``train.seed``, ``train.max_steps`` and ``train.output_dir`` are set per
    cell. ``signal``/``background`` name the pair whose rejection is reported for a multi-class
    store (default: last class vs first).
    """

    finetune: FinetuneConfig
    output_dir: Path = Path("runs/sweep")
    n_labels: list[int] = field(default_factory=lambda: [100, 1000, 10_000, 100_000])
    regimes: list[str] = field(default_factory=lambda: list(REGIMES))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    test_split: str = "test"
    test_jets: int | None = None  # a fixed random sample of the test split (null: all)
    epochs: float = 20.0  # passes over the labelled set per cell
    min_steps: int = 50
    signal: str | None = None
    background: str | None = None
    keep_models: bool = False  # keep each cell's classifier folder (else only result + scores)
    plots: bool = True

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        for name in ("n_labels", "regimes", "seeds"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise ConfigError("a non-empty list of distinct values", field=name, found=values)
        for r in self.regimes:
            if r not in REGIMES:
                raise ConfigError(f"one of {list(REGIMES)}", field="regimes", found=repr(r))
        if any(n < 2 for n in self.n_labels):
            raise ConfigError("sizes >= 2", field="n_labels", found=self.n_labels)
        if self.epochs <= 0 or self.min_steps < 1:
            raise ConfigError(
                "epochs > 0 and min_steps >= 1",
                field="epochs",
                found=(self.epochs, self.min_steps),
            )
        if self.finetune.pretrained is None and set(self.regimes) - {"scratch"}:
            raise ConfigError(
                "finetune.pretrained for the frozen/finetune regimes",
                field="finetune.pretrained",
                found=None,
            )


@dataclass
class SweepResult:
    """What :func:`run_sweep` did and where it wrote."""

    output_dir: Path
    rows: list[dict[str, Any]]  # summary rows (regime, n_labels, metric mean/std/n)
    cells: list[dict[str, Any]]  # one result per cell
    n_trained: int  # cells trained in this call (0 on a rerun of a finished sweep)


def cell_name(regime: str, n_labels: int, seed: int) -> str:
    return f"{regime}-n{n_labels:07d}-s{seed}"


def cell_steps(cfg: SweepConfig, n_labels: int) -> int:
    """Optimizer steps of a cell: ``epochs`` passes, clipped to [min_steps, train.max_steps]."""
    bs = cfg.finetune.loader.batch_size
    steps = math.ceil(cfg.epochs * n_labels / bs)
    return int(min(max(steps, cfg.min_steps), cfg.finetune.train.max_steps))


def cell_config(cfg: SweepConfig, regime: str, n_labels: int, seed: int) -> FinetuneConfig:
    """The fine-tuning config of one cell (a deep copy of the template)."""
    ft = copy.deepcopy(cfg.finetune)
    ft.regime = regime  # type: ignore[assignment]
    ft.data.n_labels = n_labels
    ft.data.label_seed = seed
    ft.train.seed = seed
    ft.train.max_steps = cell_steps(cfg, n_labels)
    ft.train.checkpoint_every = ft.train.max_steps
    ft.train.output_dir = cfg.output_dir / "cells" / cell_name(regime, n_labels, seed) / "run"
    ft.keep_checkpoints = False
    return ft


def _check_sizes(cfg: SweepConfig, store: Store, mapping: np.ndarray) -> None:
    """Fail before training if a labelled-set size exceeds what a class can supply."""
    labels = mapping[split_labels(store, cfg.finetune.data.train_split)]
    n_classes = int(mapping.max()) + 1
    for n in cfg.n_labels:
        balanced_subset(labels, n, n_classes, 0, file=store.root)


def _pair(cfg: SweepConfig, names: list[str]) -> tuple[int | None, int | None]:
    def idx(name: str | None, field_name: str) -> int | None:
        if name is None:
            return None
        if name not in names:
            raise ConfigError(f"one of the classes {names}", field=field_name, found=name)
        return names.index(name)

    return idx(cfg.signal, "signal"), idx(cfg.background, "background")


def run_sweep(cfg: SweepConfig, *, progress: Callable[[str], None] | None = None) -> SweepResult:
    """Run (or resume) the grid; write the tables and plots; see the module docstring."""
    say = progress or log.info
    out = cfg.output_dir
    ft = cfg.finetune
    store = Store(ft.data.store)
    mapping = class_map(store.classes, ft.data.classes, file=store.root)
    names = list(ft.data.classes) or store.classes
    signal, background = _pair(cfg, names)
    _check_sizes(cfg, store, mapping)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")

    test: LabelledJets | None = None
    pre = None
    cells: list[dict[str, Any]] = []
    n_trained = 0
    grid = [(r, n, s) for n in cfg.n_labels for r in cfg.regimes for s in cfg.seeds]
    for i, (regime, n, seed) in enumerate(grid):
        name = cell_name(regime, n, seed)
        folder = out / "cells" / name
        if (folder / RESULT).is_file():
            cells.append(json.loads((folder / RESULT).read_text(encoding="utf-8")))
            continue
        say(f"[{i + 1}/{len(grid)}] {name}")
        if folder.exists():
            shutil.rmtree(folder)  # an interrupted cell restarts from scratch
        cell = cell_config(cfg, regime, n, seed)
        classifier = finetune(cell, overwrite=True)
        n_trained += 1
        task = load_classifier(classifier)
        if test is None or pre is None:
            pre = classifier_preprocessing(classifier)
            test = load_labelled(store, cfg.test_split, mapping, pre, first=cfg.test_jets)
        probs = score(task, test, pre, max_particles=ft.loader.max_particles)
        metrics = evaluate_scores(test.labels, probs, signal=signal, background=background)
        np.savez_compressed(folder / SCORES, probs=probs.astype(np.float32), labels=test.labels)
        labelled = json.loads((cell.train.output_dir / "labelled.json").read_text())
        result = {
            "regime": regime,
            "n_labels": n,
            "seed": seed,
            "steps": cell.train.max_steps,
            "n_test": int(test.n_jets),
            "class_counts": labelled["class_counts"],
            **{k: float(v) for k, v in metrics.items()},
        }
        if not cfg.keep_models:
            shutil.rmtree(cell.train.output_dir, ignore_errors=True)
        write_json_atomic(folder / RESULT, result)
        cells.append(result)
    rows = summarize(cells)
    write_json_atomic(out / "summary.json", {"rows": rows, "cells": cells, "classes": names})
    write_text_atomic(out / "summary.md", markdown_table(rows))
    if cfg.plots and (n_trained or not (out / "auc_vs_labels.png").is_file()):
        write_plots(cfg, cells)  # a finished sweep's rerun does no work at all
    return SweepResult(out, rows, cells, n_trained)


def summarize(
    cells: Sequence[dict[str, Any]], metrics: Sequence[str] = METRICS
) -> list[dict[str, Any]]:
    """One row per (regime, n_labels): ``<metric>`` mean, ``<metric>_std``, ``n_seeds``."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["regime"], int(c["n_labels"])), []).append(c)
    rows = []
    for (regime, n), runs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        keys = [m for m in metrics if all(m in r for r in runs)]
        agg = aggregate_seeds([{k: r[k] for k in keys} for r in runs])
        row: dict[str, Any] = {"regime": regime, "n_labels": n, "n_seeds": len(runs)}
        for k in keys:
            row[k] = agg[k]["mean"]
            row[f"{k}_std"] = agg[k]["std"]
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = METRICS) -> str:
    """The summary as a Markdown table (mean ± std over seeds)."""
    heads = {
        "accuracy": "accuracy",
        "auc": "AUC",
        "rej_50": "1/eps_B @ eps_S=0.5",
        "rej_30": "1/eps_B @ eps_S=0.3",
        "si": "max SI",
        "pair_auc": "pair AUC",
    }
    cols = [m for m in metrics if any(m in r for r in rows)]
    lines = [
        "| regime | labelled jets | seeds | " + " | ".join(heads.get(m, m) for m in cols) + " |",
        "|---|---:|---:|" + "---:|" * len(cols),
    ]
    for r in rows:
        vals = [format_mean_std(r[m], r[f"{m}_std"]) if m in r else "-" for m in cols]
        lines.append(
            f"| {r['regime']} | {r['n_labels']} | {r['n_seeds']} | " + " | ".join(vals) + " |"
        )
    return "\n".join(lines) + "\n"


def labels_to_match(
    rows: Sequence[dict[str, Any]],
    target: float,
    regime: str = "scratch",
    metric: str = "accuracy",
) -> float:
    """Labelled jets ``regime`` needs to reach ``target`` in ``metric`` (mean over seeds).

    Linear interpolation in log(n_labels) between the two sizes that bracket the target; ``inf`` if
    the largest size does not reach it, and the smallest size if already that one does.
    """
    pts = sorted((int(r["n_labels"]), float(r[metric])) for r in rows if r["regime"] == regime)
    if not pts:
        raise InputError(f"rows of regime '{regime}'", field="rows", found="none")
    # the best value reached at or below each size (a noisy dip must not hide a crossing)
    best = np.maximum.accumulate([v for _, v in pts])
    if best[0] >= target:
        return float(pts[0][0])
    for (n0, _), (n1, _), b0, b1 in zip(pts, pts[1:], best, best[1:], strict=False):
        if b1 >= target > b0:
            t = (target - b0) / (b1 - b0)
            return float(math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0))))
    return math.inf


def write_plots(
    cfg: SweepConfig,
    cells: Sequence[dict[str, Any]],
    metrics: Sequence[str] = ("accuracy", "auc", "rej_50"),
    roc: bool = True,
) -> list[Path]:
    """``<metric>_vs_labels.png`` (mean ± std over seeds per regime) and ``roc_n<N>.png`` (seed-0
    ROC curves of every regime at the largest size) in ``cfg.output_dir``; returns the files."""
    out = cfg.output_dir
    ft = cfg.finetune
    names = list(ft.data.classes) or Store(ft.data.store).classes
    signal, background = _pair(cfg, names)
    written = []
    for metric in metrics:
        table = [c for c in cells if metric in c and math.isfinite(c[metric])]
        if table:
            fig = metric_vs_labels(table, metric, ylabel=_ylabel(metric), logy=metric == "rej_50")
            written.append(save_figure(fig, out / f"{metric}_vs_labels.png"))
    if not roc:
        return written
    n_max = max(cfg.n_labels)
    seed = cfg.seeds[0]
    curves = {}
    for regime in cfg.regimes:
        f = out / "cells" / cell_name(regime, n_max, seed) / SCORES
        if not f.is_file():
            continue
        d = np.load(f)
        labels, probs = d["labels"], d["probs"]
        if probs.shape[1] == 2:
            y, s = labels, probs[:, 1]
        else:
            sig = probs.shape[1] - 1 if signal is None else signal
            bkg = 0 if background is None else background
            y, s = pair_scores(labels, probs, sig, bkg)
        eps_s, eps_b, _ = roc_curve(y, s)
        curves[f"{regime} ({n_max} labels)"] = (eps_s, eps_b)
    if curves:
        written.append(save_figure(roc_curves(curves), out / f"roc_n{n_max}.png"))
    return written


def _ylabel(metric: str) -> str:
    return {
        "accuracy": "accuracy",
        "auc": "AUC",
        "rej_50": r"$1/\varepsilon_B$ at $\varepsilon_S=0.5$",
    }[metric]


def pretrained_summary(cfg: SweepConfig) -> dict[str, Any]:
    """Where the sweep's backbone came from (for reports): folder, pre-training task, hash."""
    if cfg.finetune.pretrained is None:
        return {}
    parts = load_pretrained(cfg.finetune.pretrained)
    return {
        "backbone": str(parts.backbone_dir),
        "task": parts.meta.get("task"),
        "content_hash": parts.meta.get("content_hash"),
        "backbone_config": dataclasses.asdict(parts.backbone),
    }
