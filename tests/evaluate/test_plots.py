"""Plots: each function returns a Figure with the expected axes/artists and saves to a real PNG."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from jetfm.core.errors import InputError
from jetfm.evaluate.metrics import roc_curve
from jetfm.evaluate.plots import (
    confusion_matrix,
    hist_with_ratio,
    loss_curves,
    metric_vs_labels,
    roc_curves,
    save_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _saved_png(fig: Figure, path) -> None:
    save_figure(fig, path)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000
    assert not list(path.parent.glob(".*tmp*"))  # atomic write left no temporary file


def test_hist_with_ratio(tmp_path):
    rng = np.random.default_rng(0)
    samples = {
        "simulated": rng.normal(170, 20, 2000),
        "generated": rng.normal(172, 21, 2000),
        "tokenized": rng.normal(170, 22, 2000),
    }
    fig = hist_with_ratio(samples, bins=np.linspace(100, 250, 31), xlabel="jet mass [GeV]")
    assert isinstance(fig, Figure)
    main, ratio = fig.axes
    assert [t.get_text() for t in main.get_legend().get_texts()] == list(samples)
    assert ratio.get_xlabel() == "jet mass [GeV]"
    assert ratio.get_ylabel() == "/ simulated"
    assert len(ratio.containers) == 2  # one errorbar per non-reference sample
    # density histograms integrate to 1 over the 30 bins (all values inside the range)
    heights = main.patches[0].get_data()[0]  # StepPatch of the reference (bin width 5 GeV)
    inside = np.mean((samples["simulated"] > 100) & (samples["simulated"] < 250))
    assert np.sum(heights * 5.0) == pytest.approx(1.0) and inside > 0.99
    # the neutral label, no experiment name
    texts = " ".join(t.get_text() for t in main.texts)
    assert "jetfm" in texts and "CMS" not in texts
    _saved_png(fig, tmp_path / "hist.png")
    with pytest.raises(InputError, match="sample name"):
        hist_with_ratio(samples, 10, "x", reference="nope")


def test_roc_curves(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    curves = {}
    for name, sep in (("ParT-like", 2.0), ("baseline", 1.0)):
        eps_s, eps_b, _ = roc_curve(y, rng.normal(sep * y, 1.0))
        curves[name] = (eps_s, eps_b)
    fig = roc_curves(curves)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert len(ax.get_lines()) == 2 + 2  # two curves + two working-point lines
    assert all(np.all(line.get_ydata() >= 1.0) for line in ax.get_lines()[:2])
    _saved_png(fig, tmp_path / "roc.png")


def test_metric_vs_labels_aggregates_seeds(tmp_path):
    table = [
        {
            "regime": "from scratch",
            "n_labels": n,
            "seed": s,
            "auc": 0.7 + 0.02 * np.log10(n) + 0.01 * s,
        }
        for n in (100, 1000, 10000)
        for s in range(3)
    ] + [{"regime": "fine-tuned", "n_labels": n, "auc": 0.9, "auc_std": 0.005} for n in (100, 1000)]
    fig = metric_vs_labels(table, "auc", ylabel="AUC")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert len(ax.containers) == 2
    scratch = ax.containers[0]
    x, y = scratch.lines[0].get_data()
    np.testing.assert_allclose(x, [100, 1000, 10000])
    np.testing.assert_allclose(y, [0.75, 0.77, 0.79])  # mean over seeds 0.00, 0.01, 0.02
    _saved_png(fig, tmp_path / "eff.png")
    with pytest.raises(InputError, match="'auc'"):
        metric_vs_labels([{"n_labels": 1}], "auc")


def test_loss_curves_and_confusion_matrix(tmp_path):
    steps = np.arange(0, 1000, 10)
    fig = loss_curves(
        {"train": (steps, 1 / (1 + steps)), "val": (steps, 1.1 / (1 + steps))}, logy=True
    )
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 2 and ax.get_yscale() == "log"
    _saved_png(fig, tmp_path / "loss.png")

    labels = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 2, 0, 2])
    fig = confusion_matrix(labels, pred, ["QCD", "Tbqq", "Wqq"])
    ax, _cbar = fig.axes
    img = ax.get_images()[0].get_array()
    np.testing.assert_allclose(img, [[0.5, 0.5, 0], [0, 1, 0], [0.25, 0, 0.75]])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["QCD", "Tbqq", "Wqq"]
    _saved_png(fig, tmp_path / "cm.png")
    scores = np.eye(3)[pred]
    counts = confusion_matrix(labels, scores, ["a", "b", "c"], normalize=False)
    np.testing.assert_allclose(counts.axes[0].get_images()[0].get_array().sum(), 8)
