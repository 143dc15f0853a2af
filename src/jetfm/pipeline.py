"""The quickstart pipeline: resumable stages from simulation to the report.

Sits between the CLI and the library (it imports from every layer; nothing imports it). Each stage
writes into its own folder of the run directory and, when it finishes, a ``stage.json`` with the hash
of the config it ran with and of the stages it depends on. A rerun skips a stage whose hash is
unchanged and reruns it (and everything downstream) when its config changed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jetfm.core.atomic import write_json_atomic
from jetfm.core.config import to_dict
from jetfm.core.errors import ConfigError
from jetfm.data.simulate import SimulationConfig, format_summary, simulate, summarize

DEFAULT_CLASSES = ["QCD", "Hbb", "Wqq", "Zqq", "Tbqq"]


def _default_sim() -> SimulationConfig:
    return SimulationConfig(
        classes=list(DEFAULT_CLASSES), jets_per_class=200, workers=2, shard_size=100, seed=1
    )


@dataclass
class QuickstartConfig:
    """The whole pipeline's settings; ``scale`` multiplies every sample size (1 = laptop, 20 = benchmark)."""

    run_dir: Path = Path("runs/quickstart")
    scale: float = 1.0
    simulation: SimulationConfig = field(default_factory=_default_sim)

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ConfigError("a positive number", field="scale", found=self.scale)


@dataclass
class Stage:
    name: str
    depends: tuple[str, ...]
    config: Callable[[QuickstartConfig], Any]
    run: Callable[[QuickstartConfig, Path, Callable[[str], None]], dict[str, Any]]


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _scaled_sim(cfg: QuickstartConfig) -> SimulationConfig:
    import dataclasses

    sim = cfg.simulation
    return dataclasses.replace(sim, jets_per_class=max(10, round(sim.jets_per_class * cfg.scale)))


def _run_data(cfg: QuickstartConfig, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    import dataclasses

    sim = dataclasses.replace(_scaled_sim(cfg), output=out / "store")
    root = simulate(sim, progress=True)
    summary = summarize(root)
    log(format_summary(summary))
    return {"store": str(root), "summary": summary}


STAGES: list[Stage] = [
    Stage("data", (), lambda c: to_dict(_scaled_sim(c)), _run_data),
]


def run_quickstart(cfg: QuickstartConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) every stage; return each stage's result record."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    from jetfm.core.config import save_config

    save_config(cfg, run_dir / "config.yaml")
    results: dict[str, Any] = {}
    hashes: dict[str, str] = {}
    for stage in STAGES:
        h = _hash({"config": stage.config(cfg), "deps": [hashes[d] for d in stage.depends]})
        hashes[stage.name] = h
        out = run_dir / stage.name
        marker = out / "stage.json"
        if marker.is_file():
            rec = json.loads(marker.read_text(encoding="utf-8"))
            if rec.get("hash") == h:
                log(f"[{stage.name}] up to date, skipped")
                results[stage.name] = rec["result"]
                continue
            marker.unlink()
        log(f"[{stage.name}] running")
        t0 = time.perf_counter()
        result = stage.run(cfg, out, log)
        rec = {"hash": h, "seconds": round(time.perf_counter() - t0, 1), "result": result}
        write_json_atomic(marker, rec)
        results[stage.name] = result
        log(f"[{stage.name}] done in {rec['seconds']} s")
    return results
