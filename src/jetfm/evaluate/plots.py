"""Plots as pure functions: arrays in, a matplotlib ``Figure`` out (no pyplot, no global state).

Figures are built with ``matplotlib.figure.Figure`` (not ``pyplot``), so nothing is registered with a
GUI backend, nothing leaks between calls, and saving to PNG uses the Agg renderer. Styling is
mplhep's CMS-like style applied through a style *context* (rcParams restored afterwards), with a
neutral "jetfm simulation" label: the samples are not CMS data and must not carry an experiment's
name. :func:`save_figure` writes atomically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib.style as mstyle
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from jetfm.core.atomic import atomic_path
from jetfm.core.errors import InputError

DEFAULT_LABEL = "simulation"
_MARGINS = {"left": 0.14, "right": 0.96, "top": 0.93, "bottom": 0.12}


@contextmanager
def _style() -> Iterator[None]:
    import mplhep  # imported here: it takes seconds, and importing jetfm.evaluate should not

    with mstyle.context(mplhep.style.CMS):
        yield


def _label(ax: Axes, text: str | None) -> None:
    """'jetfm <text>' above the top-left corner of the axes (bold name, like an experiment label)."""
    if text is None:
        return
    name = ax.text(
        0.0, 1.01, "jetfm", transform=ax.transAxes, ha="left", va="bottom", fontweight="bold"
    )
    # placed relative to the rendered name, so the two never overlap whatever the font size
    ax.annotate(" " + text, xy=(1.0, 0.0), xycoords=name, ha="left", va="bottom", style="italic")


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 72) -> Path:
    """Save ``fig`` (format from the suffix, e.g. .png) atomically; returns the path.

    Figures come with fixed margins, so no ``bbox_inches="tight"`` (which renders twice: 2-3x slower).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    return path


def hist_with_ratio(
    samples: Mapping[str, np.ndarray],
    bins: int | Sequence[float] | np.ndarray,
    xlabel: str,
    reference: str | None = None,
    *,
    density: bool = True,
    logy: bool = False,
    ratio_range: tuple[float, float] = (0.5, 1.5),
    label: str | None = DEFAULT_LABEL,
) -> Figure:
    """Step histograms of several samples, with a lower panel of each sample / reference per bin.

    Used for generated vs simulated vs tokenized-then-decoded jets. ``reference`` defaults to the
    first sample; ``bins`` as in ``np.histogram`` (an int spans the reference's range). Error bars in
    the ratio panel are the sample's Poisson uncertainty. Axes: ``fig.axes == [main, ratio]``.
    """
    if not samples:
        raise InputError("at least one sample", field="samples", found="empty")
    reference = next(iter(samples)) if reference is None else reference
    if reference not in samples:
        raise InputError(f"a sample name among {list(samples)}", field="reference", found=reference)
    ref = np.asarray(samples[reference], dtype=np.float64)
    edges = np.histogram_bin_edges(ref, bins=bins)
    centers = 0.5 * (edges[1:] + edges[:-1])
    width = np.diff(edges)
    counts = {
        k: np.histogram(np.asarray(v, dtype=np.float64), edges)[0] for k, v in samples.items()
    }

    def norm(c: np.ndarray) -> np.ndarray:
        total = c.sum() * width if density else np.ones_like(width)
        return c / np.where(total > 0, total, 1.0)

    with _style():
        fig = Figure(figsize=(10, 10))
        gs = fig.add_gridspec(
            2, 1, height_ratios=(3, 1), hspace=0.05, left=0.15, right=0.96, top=0.94, bottom=0.1
        )
        ax = fig.add_subplot(gs[0])
        rax = fig.add_subplot(gs[1], sharex=ax)
        ref_h = norm(counts[reference])
        for i, (name, c) in enumerate(counts.items()):
            color = to_rgba(f"C{i}")  # resolved now: "Cn" is looked up again at draw time otherwise
            h = norm(c)
            ax.stairs(h, edges, label=name, color=color, linewidth=2 if name == reference else 1.5)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(ref_h > 0, h / ref_h, np.nan)
                err = np.where(c > 0, ratio / np.sqrt(np.maximum(c, 1)), np.nan)
            if name == reference:
                rax.axhline(1.0, color=color, linewidth=1)
            else:
                rax.errorbar(centers, ratio, yerr=err, fmt="o", markersize=3, color=color)
        ax.set_ylabel("density" if density else "jets / bin")
        if logy:
            ax.set_yscale("log")
        ax.legend(fontsize="small")
        ax.tick_params(labelbottom=False)
        rax.set_ylim(*ratio_range)
        rax.set_ylabel(f"/ {reference}", fontsize="small")
        rax.set_xlabel(xlabel)
        ax.set_xlim(edges[0], edges[-1])
        _label(ax, label)
    return fig


def roc_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    working_points: Sequence[float] = (0.3, 0.5),
    label: str | None = DEFAULT_LABEL,
) -> Figure:
    """Background rejection 1/eps_B (log scale) vs signal efficiency eps_S, one line per classifier.

    ``curves[name] = (eps_s, eps_b)``; points with eps_B = 0 (infinite rejection) are not drawn.
    Dotted vertical lines mark the quoted working points.
    """
    if not curves:
        raise InputError("at least one ROC curve", field="curves", found="empty")
    with _style():
        fig = Figure(figsize=(10, 8))
        fig.subplots_adjust(**_MARGINS)
        ax = fig.add_subplot()
        for name, (eps_s, eps_b) in curves.items():
            s = np.asarray(eps_s, dtype=np.float64)
            b = np.asarray(eps_b, dtype=np.float64)
            if s.shape != b.shape:
                raise InputError(
                    "eps_s and eps_b of equal shape", field=name, found=(s.shape, b.shape)
                )
            ok = b > 0
            ax.plot(s[ok], 1.0 / b[ok], label=name)
        for wp in working_points:
            ax.axvline(wp, color="grey", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel(r"signal efficiency $\varepsilon_S$")
        ax.set_ylabel(r"background rejection $1/\varepsilon_B$")
        ax.legend(fontsize="small")
        _label(ax, label)
    return fig


def _group_metric(
    table: Sequence[Mapping[str, Any]], metric: str, x: str, group: str
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{group: (x values, mean, std)}: rows with equal (group, x) are seeds (mean ± sample std), or a
    single row may carry its own ``<metric>_std``."""
    cells: dict[str, dict[float, list[Mapping[str, Any]]]] = {}
    for i, row in enumerate(table):
        for key in (metric, x):
            if key not in row:
                raise InputError(f"a '{key}' entry", field=f"table[{i}]", found=sorted(row))
        cells.setdefault(str(row.get(group, "")), {}).setdefault(float(row[x]), []).append(row)
    out = {}
    for g, by_x in cells.items():
        xs = np.array(sorted(by_x))
        means, stds = [], []
        for xv in xs:
            rows = by_x[xv]
            v = np.array([float(r[metric]) for r in rows])
            means.append(v.mean())
            if len(rows) == 1:
                stds.append(float(rows[0].get(f"{metric}_std", 0.0)))
            else:
                stds.append(float(v.std(ddof=1)))
        out[g] = (xs, np.array(means), np.array(stds))
    return out


def metric_vs_labels(
    table: Sequence[Mapping[str, Any]],
    metric: str,
    *,
    x: str = "n_labels",
    group: str = "regime",
    ylabel: str | None = None,
    logy: bool = False,
    label: str | None = DEFAULT_LABEL,
) -> Figure:
    """Data efficiency: ``metric`` vs number of labelled jets (log x), one line per ``group`` value.

    ``table`` is a list of dicts such as ``{"regime": "fine-tuned", "n_labels": 1000, "seed": 0,
    "auc": 0.91}``; several rows at the same (regime, n_labels) are seeds and give mean ± sample std
    error bars (or one row with ``auc_std``).
    """
    if not table:
        raise InputError("at least one row", field="table", found="empty")
    series = _group_metric(table, metric, x, group)
    with _style():
        fig = Figure(figsize=(10, 8))
        fig.subplots_adjust(**_MARGINS)
        ax = fig.add_subplot()
        for name, (xs, mean, std) in series.items():
            ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=name or None)
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
            # plain numbers ("20", not "2 x 10^1") keep the tick labels inside the fixed margins
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        ax.set_xlabel("labelled jets" if x == "n_labels" else x)
        ax.set_ylabel(ylabel or metric)
        if any(series):
            ax.legend(fontsize="small")
        _label(ax, label)
    return fig


def loss_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    xlabel: str = "step",
    ylabel: str = "loss",
    logy: bool = False,
    label: str | None = DEFAULT_LABEL,
) -> Figure:
    """Training/validation curves: ``curves[name] = (steps, values)``."""
    if not curves:
        raise InputError("at least one curve", field="curves", found="empty")
    with _style():
        fig = Figure(figsize=(10, 7))
        fig.subplots_adjust(**_MARGINS)
        ax = fig.add_subplot()
        for name, (steps, values) in curves.items():
            s, v = np.asarray(steps), np.asarray(values, dtype=np.float64)
            if s.shape != v.shape:
                raise InputError(
                    "steps and values of equal shape", field=name, found=(s.shape, v.shape)
                )
            ax.plot(s, v, label=name, marker="." if len(s) < 30 else None)
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize="small")
        _label(ax, label)
    return fig


def confusion_matrix(
    labels: np.ndarray,
    predictions: np.ndarray,
    class_names: Sequence[str],
    *,
    normalize: bool = True,
    label: str | None = DEFAULT_LABEL,
) -> Figure:
    """Confusion matrix (rows: true class, columns: predicted), row-normalised by default.

    ``predictions`` are class indices (n,) or per-class scores (n, C) (argmax taken).
    """
    labels = np.asarray(labels, dtype=np.int64)
    pred = np.asarray(predictions)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    pred = pred.astype(np.int64)
    k = len(class_names)
    if labels.shape != pred.shape or labels.ndim != 1:
        raise InputError(
            "labels and predictions (n,)", field="predictions", found=(labels.shape, pred.shape)
        )
    if len(labels) and (min(labels.min(), pred.min()) < 0 or max(labels.max(), pred.max()) >= k):
        raise InputError(f"class indices in [0, {k})", field="labels")
    cm = np.bincount(labels * k + pred, minlength=k * k).reshape(k, k).astype(np.float64)
    if normalize:
        rows = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    with _style():
        size = max(8.0, 0.8 * k + 4)
        fig = Figure(figsize=(size, size))
        fig.subplots_adjust(left=0.17, right=0.93, top=0.94, bottom=0.17)
        ax = fig.add_subplot()
        im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalize else None)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize="small")
        ax.set_yticks(range(k), class_names, fontsize="small")
        ax.minorticks_off()
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        fmt = "{:.2f}" if normalize else "{:.0f}"
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    fmt.format(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=min(18.0, 160.0 / k),
                    color="white" if cm[i, j] > 0.5 * cm.max() else "black",
                )
        _label(ax, label)
    return fig
