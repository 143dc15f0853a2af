"""The data-efficiency sweep: a tiny grid runs, writes its tables and plots, and resumes without retraining."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from jetfm.core.config import from_dict
from jetfm.evaluate.sweep import (
    SweepConfig,
    cell_name,
    cell_steps,
    labels_to_match,
    run_sweep,
    write_plots,
)

from .conftest import quiet_train


def test_tiny_sweep_runs_and_resumes(mpm_run: Path, toy_store: Path, tmp_path: Path) -> None:
    cfg = from_dict(
        SweepConfig,
        {
            "finetune": {
                "pretrained": str(mpm_run),
                "data": {"store": str(toy_store), "val_split": None},
                "loader": {"batch_size": 32, "max_particles": 64},
                "head": {"kind": "mean"},
                "train": quiet_train(tmp_path / "unused", max_steps=4),
            },
            "output_dir": str(tmp_path / "sweep"),
            "n_labels": [20, 40],
            "regimes": ["frozen", "scratch"],
            "seeds": [0],
            "test_jets": 100,
            "epochs": 1.0,
            "min_steps": 2,
            "plots": False,  # ~2 s per figure here: drawn once below
        },
    )
    assert cell_steps(cfg, 20) == 2 and cell_steps(cfg, 1000) == 4  # clipped to [min, max]
    res = run_sweep(cfg)
    assert res.n_trained == 4 and len(res.cells) == 4
    out = tmp_path / "sweep"
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert [(r["regime"], r["n_labels"], r["n_seeds"]) for r in rows] == [
        ("frozen", 20, 1),
        ("scratch", 20, 1),
        ("frozen", 40, 1),
        ("scratch", 40, 1),
    ]
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["auc"] <= 1.0 and r["accuracy_std"] >= 0.0
    cell = json.loads((out / "cells" / cell_name("frozen", 40, 0) / "result.json").read_text())
    assert cell["n_test"] == 100 and cell["class_counts"] == [20, 20] and cell["steps"] == 2
    assert not (out / "cells" / cell_name("frozen", 40, 0) / "run").exists()  # models not kept
    md = (out / "summary.md").read_text()
    assert "| frozen | 40 | 1 |" in md and "1/eps_B @ eps_S=0.5" in md
    assert not list(out.glob("*.png"))
    files = write_plots(cfg, res.cells, metrics=("auc",))
    assert [f.name for f in files] == ["auc_vs_labels.png", "roc_n40.png"]
    assert all(f.stat().st_size > 0 for f in files)

    results = sorted((out / "cells").glob("*/result.json"))
    mtimes = {p: p.stat().st_mtime_ns for p in results}
    again = run_sweep(cfg)
    assert again.n_trained == 0
    assert json.dumps(again.rows) == json.dumps(res.rows)  # (NaN-safe comparison)
    assert {p: p.stat().st_mtime_ns for p in results} == mtimes
    # an interrupted cell (no result.json) is redone, alone
    victim = out / "cells" / cell_name("scratch", 20, 0)
    (victim / "result.json").unlink()
    (victim / "junk").write_text("half-written")
    third = run_sweep(cfg)
    assert third.n_trained == 1 and not (victim / "junk").exists()


def test_labels_to_match_interpolates_in_log_n() -> None:
    rows = [
        {"regime": "scratch", "n_labels": 100, "accuracy": 0.6},
        {"regime": "scratch", "n_labels": 1000, "accuracy": 0.7},
        {"regime": "scratch", "n_labels": 10000, "accuracy": 0.8},
        {"regime": "finetune", "n_labels": 100, "accuracy": 0.75},
    ]
    assert labels_to_match(rows, 0.75) == pytest.approx(math.sqrt(1000 * 10000))
    assert labels_to_match(rows, 0.5) == 100
    assert labels_to_match(rows, 0.9) == math.inf
    assert labels_to_match(rows, 0.7) == pytest.approx(1000)
