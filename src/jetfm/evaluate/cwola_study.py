"""CWoLa (classification without labels, arXiv 1708.02949 / 1805.02664) with pre-trained backbones.

Two mixed samples are built from the training split of a labelled store: ``M1`` with signal fraction
``f1`` (the injected signal) and ``M2`` with signal fraction ``f2`` (default 0: background only), each
of ``n_per_mixture`` jets, all jets distinct. A classifier is trained to tell M1 from M2 (mixture
labels, the only labels a search would have) and scored on the test split with the *true* labels.
If it learns anything beyond the statistical noise of the mixtures, it learned the signal: its
significance improvement ``SI = eps_S / sqrt(eps_B)`` is what a cut on it would gain in a search.
The study repeats this for several injected fractions, for a pre-trained backbone (``finetune`` /
``frozen``) and the same network from scratch, over seeds, and writes a table and an SI plot.

Layout of ``output_dir``: ``cells/<regime>-f<f1>-s<seed>/result.json`` (atomic, so reruns skip
finished cells), ``summary.json``, ``summary.md`` and ``si_vs_signal_fraction.png`` (max SI vs
injected signal fraction, one line per regime, mean ± std over seeds).
"""

from __future__ import annotations

import copy
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
from jetfm.data.features import required_particle_fields
from jetfm.data.store import Store
from jetfm.evaluate.metrics import roc_auc, significance_improvement
from jetfm.evaluate.plots import metric_vs_labels, save_figure
from jetfm.evaluate.predict import classifier_preprocessing, score
from jetfm.evaluate.sweep import markdown_table, summarize
from jetfm.tasks.classify import REGIMES, load_classifier
from jetfm.train.finetune import (
    FinetuneConfig,
    LabelledJets,
    class_map,
    finetune,
    load_labelled,
    load_pretrained,
    read_jets,
    split_labels,
)

log = logging.getLogger(__name__)

RESULT = "result.json"


@dataclass
class CwolaConfig:
    """A CWoLa study: mixtures of ``signal`` and ``background`` jets of ``finetune.data.store``.

    ``finetune`` is the template of every cell (its ``data.classes``/``n_labels`` are ignored:
    the mixtures define the training data). ``eps_b`` lists background efficiencies at which SI is
    also reported (NaN where the test set keeps fewer than ``min_background`` background jets).
    """

    finetune: FinetuneConfig
    output_dir: Path = Path("runs/cwola")
    signal: str = "Tbqq"
    background: str = "QCD"
    n_per_mixture: int = 2000
    signal_fractions: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2])
    reference_fraction: float = 0.0  # f2: the signal fraction of M2
    regimes: list[str] = field(default_factory=lambda: ["finetune", "scratch"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    test_split: str = "test"
    test_jets: int | None = None
    eps_b: list[float] = field(default_factory=lambda: [0.1, 0.01])
    min_background: int = 10
    keep_models: bool = False
    plots: bool = True

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        if self.signal == self.background:
            raise ConfigError("different signal and background", field="signal", found=self.signal)
        if self.n_per_mixture < 2:
            raise ConfigError("an integer >= 2", field="n_per_mixture", found=self.n_per_mixture)
        for f in [*self.signal_fractions, self.reference_fraction]:
            if not 0.0 <= f <= 1.0:
                raise ConfigError("fractions in [0, 1]", field="signal_fractions", found=f)
        for r in self.regimes:
            if r not in REGIMES:
                raise ConfigError(f"one of {list(REGIMES)}", field="regimes", found=repr(r))
        if not self.seeds or not self.regimes or not self.signal_fractions:
            raise ConfigError("non-empty lists", field="seeds/regimes/signal_fractions")
        if self.finetune.pretrained is None and set(self.regimes) - {"scratch"}:
            raise ConfigError(
                "finetune.pretrained for the frozen/finetune regimes",
                field="finetune.pretrained",
                found=None,
            )


def make_mixtures(
    labels: np.ndarray,
    signal: int,
    background: int,
    n_per_mixture: int,
    f1: float,
    f2: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into ``labels``) of the mixed samples M1 and M2, disjoint, each of ``n_per_mixture``
    jets with ``round(f * n_per_mixture)`` signal jets; seeded draws without replacement."""
    rng = np.random.default_rng([seed, 104729])
    sig = rng.permutation(np.flatnonzero(labels == signal))
    bkg = rng.permutation(np.flatnonzero(labels == background))
    n_s1, n_s2 = round(f1 * n_per_mixture), round(f2 * n_per_mixture)
    n_b1, n_b2 = n_per_mixture - n_s1, n_per_mixture - n_s2
    if n_s1 + n_s2 > len(sig) or n_b1 + n_b2 > len(bkg):
        raise InputError(
            f"{n_s1 + n_s2} signal and {n_b1 + n_b2} background jets for the two mixtures",
            field="n_per_mixture",
            found=f"{len(sig)} signal, {len(bkg)} background",
        )
    m1 = np.concatenate([sig[:n_s1], bkg[:n_b1]])
    m2 = np.concatenate([sig[n_s1 : n_s1 + n_s2], bkg[n_b1 : n_b1 + n_b2]])
    return rng.permutation(m1), rng.permutation(m2)


def cell_name(regime: str, f1: float, seed: int) -> str:
    return f"{regime}-f{f1:.4f}-s{seed}"


def truth_metrics(
    labels: np.ndarray, scores: np.ndarray, eps_b: Sequence[float] = (), min_background: int = 10
) -> dict[str, float]:
    """True-label AUC, best SI (cuts keeping >= ``min_background`` background jets) and SI at each
    ``eps_b`` (``si_<eps_b>``; NaN where fewer than ``min_background`` background jets pass)."""
    out = {
        "auc": roc_auc(labels, scores),
        "si": significance_improvement(labels, scores, min_background=min_background)["si"],
    }
    n_bkg = int((np.asarray(labels) == 0).sum())
    for e in eps_b:
        ok = e * n_bkg >= min_background
        out[f"si_{e:g}"] = (
            significance_improvement(labels, scores, eps_b=e)["si"] if ok else math.nan
        )
    return out


def run_cwola(cfg: CwolaConfig, *, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the study; returns ``{"rows", "cells"}`` as written to summary.json."""
    say = progress or log.info
    out = cfg.output_dir
    ft = cfg.finetune
    store = Store(ft.data.store)
    classes = [cfg.background, cfg.signal]  # classifier class 1 = the signal-enriched mixture M1
    mapping = class_map(store.classes, classes, file=store.root)
    train_labels = mapping[split_labels(store, ft.data.train_split)]
    # fail before training if a mixture cannot be filled
    for f1 in cfg.signal_fractions:
        make_mixtures(train_labels, 1, 0, cfg.n_per_mixture, f1, cfg.reference_fraction)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    pre = load_pretrained(ft.pretrained).preprocessing if ft.pretrained is not None else None
    test: LabelledJets | None = None
    cells: list[dict[str, Any]] = []
    trained = 0
    grid = [(r, f, s) for f in cfg.signal_fractions for r in cfg.regimes for s in cfg.seeds]
    for i, (regime, f1, seed) in enumerate(grid):
        folder = out / "cells" / cell_name(regime, f1, seed)
        if (folder / RESULT).is_file():
            cells.append(json.loads((folder / RESULT).read_text(encoding="utf-8")))
            continue
        say(f"[{i + 1}/{len(grid)}] {folder.name}")
        if folder.exists():
            shutil.rmtree(folder)
        m1, m2 = make_mixtures(
            train_labels, 1, 0, cfg.n_per_mixture, f1, cfg.reference_fraction, seed
        )
        idx = np.concatenate([m1, m2])
        mix_labels = np.concatenate([np.ones(len(m1)), np.zeros(len(m2))]).astype(np.int64)
        cell = copy.deepcopy(ft)
        cell.regime = regime  # type: ignore[assignment]
        cell.data.classes = classes
        cell.data.n_labels = None
        cell.train.seed = seed
        cell.loader.seed = seed
        cell.train.checkpoint_every = cell.train.max_steps
        cell.train.output_dir = folder / "run"
        cell.keep_checkpoints = False
        fields = (
            required_particle_fields(pre.feature_names)
            if pre is not None
            else store.particle_fields
        )
        jets = read_jets(store, ft.data.train_split, idx, fields)
        classifier = finetune(cell, labelled=LabelledJets(jets, mix_labels), overwrite=True)
        trained += 1
        task = load_classifier(classifier)
        cpre = classifier_preprocessing(classifier)
        if test is None:
            test = load_labelled(store, cfg.test_split, mapping, cpre, first=cfg.test_jets)
        probs = score(task, test, cpre, max_particles=ft.loader.max_particles)
        metrics = truth_metrics(test.labels, probs[:, 1], cfg.eps_b, cfg.min_background)
        n_s1 = round(f1 * cfg.n_per_mixture)
        result = {
            "regime": regime,
            "signal_fraction": f1,
            "n_signal": n_s1,
            "reference_fraction": cfg.reference_fraction,
            "n_per_mixture": cfg.n_per_mixture,
            "seed": seed,
            "n_test": int(test.n_jets),
            **metrics,
        }
        if not cfg.keep_models:
            shutil.rmtree(folder / "run", ignore_errors=True)
        write_json_atomic(folder / RESULT, result)
        cells.append(result)
    metric_names = ["auc", "si", *[f"si_{e:g}" for e in cfg.eps_b]]
    by_fraction = [{**c, "n_labels": c["n_signal"]} for c in cells]
    rows = summarize(by_fraction, metric_names)
    for r in rows:
        r["n_signal"] = r.pop("n_labels")
        r["signal_fraction"] = r["n_signal"] / cfg.n_per_mixture
    summary = {"rows": rows, "cells": cells, "signal": cfg.signal, "background": cfg.background}
    write_json_atomic(out / "summary.json", summary)
    table = markdown_table([{**r, "n_labels": r["n_signal"]} for r in rows], metric_names)
    table = table.replace("| labelled jets |", "| injected signal jets (of each mixture) |", 1)
    write_text_atomic(out / "summary.md", table)
    plotted = [c for c in cells if c["signal_fraction"] > 0]
    if cfg.plots and plotted and (trained or not (out / "si_vs_signal_fraction.png").is_file()):
        fig = metric_vs_labels(
            plotted, "si", x="signal_fraction", ylabel="max significance improvement"
        )
        save_figure(fig, out / "si_vs_signal_fraction.png")
    return summary
