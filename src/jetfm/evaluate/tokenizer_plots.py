"""Plots of tokenizer quality: pure functions of :class:`jetfm.tokenizers.quality.QualityResult` arrays.

Each function returns a new :class:`matplotlib.figure.Figure` (made without pyplot's global state,
so nothing leaks between calls) drawn in mplhep's ROOT style; saving is the caller's business.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import mplhep as hep
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from jetfm.tokenizers.quality import JET_OBSERVABLES

_LABELS = {
    "mass": "jet mass [GeV]",
    "pt": r"jet $p_T$ [GeV]",
    "tau21": r"$\tau_{21}$",
    "tau32": r"$\tau_{32}$",
    "n_particles": "multiplicity",
}


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 3)
    return (n + cols - 1) // cols, cols


def _edges(
    *arrays: np.ndarray, bins: int = 50, quantiles: tuple[float, float] = (0.001, 0.999)
) -> np.ndarray:
    both = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
    both = both[np.isfinite(both)]
    if both.size == 0:
        return np.linspace(0, 1, bins + 1)
    lo, hi = np.quantile(both, quantiles)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def plot_resolution(
    arrays: dict[str, np.ndarray], feature_names: Sequence[str], *, bins: int = 60
) -> Figure:
    """Histograms of decoded - original per particle feature (standardised units)."""
    rows, cols = _grid(len(feature_names))
    with matplotlib.style.context(hep.style.ROOT):
        fig = Figure(figsize=(5 * cols, 4 * rows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
        for ax, name in zip(axes, feature_names, strict=False):
            res = arrays[f"feature_dec_{name}"] - arrays[f"feature_orig_{name}"]
            h, e = np.histogram(res, bins=_edges(res, bins=bins))
            hep.histplot(h, e, ax=ax, histtype="step", label=f"std {res.std():.3g}")
            ax.set_xlabel(f"{name}: decoded - original")
            ax.set_ylabel("particles")
            ax.legend(fontsize="small")
        for ax in axes[len(feature_names) :]:
            ax.set_visible(False)
    return fig


def plot_jet_observables(
    arrays: dict[str, np.ndarray],
    observables: Sequence[str] = JET_OBSERVABLES,
    *,
    bins: int = 40,
) -> Figure:
    """Original vs decoded distributions of jet observables, each with a decoded/original ratio panel."""
    n = len(observables)
    with matplotlib.style.context(hep.style.ROOT):
        fig = Figure(figsize=(5 * n, 5.5), layout="constrained")
        gs = fig.add_gridspec(2, n, height_ratios=(3, 1))
        for j, name in enumerate(observables):
            o, d = arrays[f"jet_orig_{name}"], arrays[f"jet_dec_{name}"]
            edges = _edges(o, d, bins=bins)
            ho, _ = np.histogram(o, bins=edges)
            hd, _ = np.histogram(d, bins=edges)
            ax = fig.add_subplot(gs[0, j])
            rax = fig.add_subplot(gs[1, j], sharex=ax)
            hep.histplot(ho, edges, ax=ax, histtype="step", label="original", color="black")
            hep.histplot(hd, edges, ax=ax, histtype="step", label="decoded", color="tab:red")
            ax.set_ylabel("jets")
            ax.legend(fontsize="small")
            ax.tick_params(labelbottom=False)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(ho > 0, hd / ho, np.nan)
                err = np.where(ho > 0, np.sqrt(hd) / ho, np.nan)
            centres = 0.5 * (edges[1:] + edges[:-1])
            rax.errorbar(centres, ratio, yerr=err, fmt="o", ms=3, color="tab:red")
            rax.axhline(1.0, color="black", lw=1)
            rax.set_ylim(0.5, 1.5)
            rax.set_ylabel("dec./orig.")
            rax.set_xlabel(_LABELS.get(name, name))
            rax.xaxis.set_major_locator(MaxNLocator(4))
    return fig


def plot_token_frequencies(counts: np.ndarray, *, title: str | None = None) -> Figure:
    """Token frequencies: per token id (left) and sorted by rank on log axes (right)."""
    counts = np.asarray(counts, dtype=np.float64)
    freq = counts / max(1.0, counts.sum())
    with matplotlib.style.context(hep.style.ROOT):
        fig = Figure(figsize=(12, 4.5), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        ax1.bar(np.arange(len(freq)), freq, width=1.0, color="tab:blue")
        ax1.set_xlabel("token id")
        ax1.set_ylabel("frequency")
        ranked = np.sort(freq)[::-1]
        used = ranked[ranked > 0]
        ax2.loglog(np.arange(1, len(used) + 1), used, color="tab:blue")
        ax2.axhline(1.0 / len(freq), color="gray", ls="--", label="uniform")
        ax2.set_xlabel("rank")
        ax2.set_ylabel("frequency")
        ax2.legend(fontsize="small")
        ax2.set_title(f"{len(used)} of {len(freq)} codes used", fontsize="small")
        if title:
            fig.suptitle(title)
    return fig
