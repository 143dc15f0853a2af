"""CWoLa: mixtures with the requested signal fractions, truth metrics, a tiny resumable study."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from jetfm.core.config import from_dict
from jetfm.core.errors import InputError
from jetfm.evaluate.cwola_study import CwolaConfig, make_mixtures, run_cwola, truth_metrics

from .conftest import quiet_train


def test_mixtures_have_the_requested_fractions_and_are_disjoint() -> None:
    labels = np.array([1] * 300 + [0] * 2000 + [2] * 50)
    m1, m2 = make_mixtures(
        labels, signal=1, background=0, n_per_mixture=1000, f1=0.2, f2=0.05, seed=1
    )
    assert len(m1) == len(m2) == 1000
    assert (labels[m1] == 1).sum() == 200 and (labels[m2] == 1).sum() == 50
    assert set(labels[m1]) | set(labels[m2]) == {0, 1}  # class 2 never used
    assert not set(m1) & set(m2) and len(set(m1)) == 1000
    a1, _ = make_mixtures(labels, 1, 0, 1000, 0.2, 0.05, seed=1)
    assert np.array_equal(a1, m1)  # seeded
    m1, m2 = make_mixtures(labels, 1, 0, 1000, 0.0)
    assert (labels[m1] == 1).sum() == 0 and (labels[m2] == 1).sum() == 0
    with pytest.raises(InputError, match="n_per_mixture"):
        make_mixtures(labels, 1, 0, 1000, 0.5, 0.0)  # 500 signal jets wanted, 300 exist


def test_truth_metrics_on_hand_made_scores() -> None:
    y = np.array([0] * 100 + [1] * 10)
    s = np.concatenate([np.linspace(0, 0.5, 100), np.linspace(0.6, 1.0, 10)])  # perfect separation
    m = truth_metrics(y, s, eps_b=[0.1, 0.01], min_background=10)
    assert m["auc"] == 1.0
    assert m["si"] == pytest.approx(1.0 / math.sqrt(0.1))  # all signal kept with 10 background jets
    assert m["si_0.1"] == pytest.approx(1.0 / math.sqrt(0.1))
    assert math.isnan(m["si_0.01"])  # 1 background jet: too few to quote


def test_tiny_cwola_study(mpm_run: Path, toy_store: Path, tmp_path: Path) -> None:
    cfg = from_dict(
        CwolaConfig,
        {
            "finetune": {
                "pretrained": str(mpm_run),
                "data": {"store": str(toy_store), "val_split": None},
                "loader": {"batch_size": 32, "max_particles": 64},
                "head": {"kind": "mean"},
                "train": quiet_train(tmp_path / "unused", max_steps=3),
            },
            "output_dir": str(tmp_path / "cwola"),
            "signal": "Tbqq",
            "background": "QCD",
            "n_per_mixture": 100,
            "signal_fractions": [0.3],
            "regimes": ["finetune"],
            "seeds": [0],
            "test_jets": 200,
            "eps_b": [0.1],
        },
    )
    summary = run_cwola(cfg)
    (cell,) = summary["cells"]
    assert cell["n_signal"] == 30 and cell["n_test"] == 200 and cell["regime"] == "finetune"
    assert 0.0 <= cell["auc"] <= 1.0 and cell["si"] > 0
    run = json.loads((tmp_path / "cwola" / "summary.json").read_text())
    assert run["rows"][0]["signal_fraction"] == pytest.approx(0.3)
    assert "injected signal jets" in (tmp_path / "cwola" / "summary.md").read_text()
    assert (tmp_path / "cwola" / "si_vs_signal_fraction.png").is_file()
    result = tmp_path / "cwola" / "cells" / "finetune-f0.3000-s0" / "result.json"
    mtime = result.stat().st_mtime_ns
    run_cwola(cfg)  # finished cells are skipped
    assert result.stat().st_mtime_ns == mtime
