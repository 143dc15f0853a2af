"""The quickstart pipeline end to end at a tiny scale: every stage runs for real (Pythia, tokenizer,
MPM, NTP, fine-tuning sweeps, sampling, report); reruns skip finished stages; a changed setting reruns
exactly what it affects; the report renders with every image in headless Chromium."""

from __future__ import annotations

import json

import pytest

from jetfm.core.config import load_config
from jetfm.pipeline import STAGES, QuickstartConfig, build_run_report, run_quickstart
from tests.chromium import loaded_images, needs_chromium

TINY = [
    "simulation.classes=[QCD, Tbqq]",
    "simulation.jets_per_class=60",
    "simulation.workers=1",
    "simulation.shard_size=30",
    "tokenizer.type=kmeans",
    "tokenizer.codebook_size=64",
    "pretrain_steps=8",
    "dim=32",
    "depth=1",
    "sweep_regimes=[frozen, scratch]",
    "sweep_seeds=[0]",
    "sweep_max_steps=8",
    "sample_jets=20",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("quickstart")
    cfg = load_config(QuickstartConfig, None, [*TINY, f"run_dir={run_dir}"])
    logs: list[str] = []
    run_quickstart(cfg, log=logs.append)
    return cfg, run_dir, logs


def test_every_stage_ran_and_left_its_outputs(tiny_run):
    _, run_dir, logs = tiny_run
    for stage in STAGES:
        rec = json.loads((run_dir / stage.name / "stage.json").read_text())
        assert rec["seconds"] >= 0
        assert f"[{stage.name}] done" in "\n".join(logs)
    assert (run_dir / "tokenizer" / "tokenizer" / "model.safetensors").is_file()
    assert (run_dir / "mpm" / "run" / "checkpoints" / "last.json").is_file()
    summary = json.loads((run_dir / "sweep_mpm" / "summary.json").read_text())
    assert {r["regime"] for r in summary["rows"]} == {"frozen", "scratch"}
    assert all(0.0 <= r["auc"] <= 1.0 for r in summary["rows"])
    metrics = json.loads((run_dir / "generation" / "eval" / "metrics.json").read_text())
    assert metrics["generated"] and all("floor" in r for r in metrics["generated"])
    html = (run_dir / "report.html").read_text()
    for title in (
        "Dataset",
        "Tokenizer quality",
        "Pre-training",
        "Fine-tuning: MPM backbone",
        "Generation",
    ):
        assert title in html


def test_rerun_skips_and_changed_setting_reruns_downstream_only(tiny_run):
    cfg, _, _ = tiny_run
    logs: list[str] = []
    run_quickstart(cfg, log=logs.append)
    assert all(f"[{s.name}] up to date, skipped" in logs for s in STAGES)
    import dataclasses

    changed = dataclasses.replace(cfg, sample_jets=24)
    logs = []
    run_quickstart(changed, log=logs.append)
    ran = {s.name for s in STAGES if f"[{s.name}] running" in logs}
    assert ran == {"generation", "report"}


def test_report_rebuilds_from_the_run_folder(tiny_run):
    _, run_dir, _ = tiny_run
    (run_dir / "report.html").unlink()
    path = build_run_report(run_dir)
    assert path.is_file() and "Generation" in path.read_text()


@needs_chromium
def test_report_images_all_load_in_headless_chromium(tiny_run, tmp_path):
    _, run_dir, _ = tiny_run
    loaded, total = loaded_images(run_dir / "report.html", tmp_path)
    assert total >= 8
    assert loaded == total
