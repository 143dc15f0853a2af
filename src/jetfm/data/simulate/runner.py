"""``simulate(cfg)``: plan work units, run them on worker processes, write shards, finalize the store.

A work unit is (class, split, chunk): an independent Pythia run seeded from ``cfg.seed`` and the unit's
name, producing exactly one shard. Hence results do not depend on the number of workers, splits are
disjoint by construction, and a killed run resumes by skipping units whose shard already exists
(shards are written atomically by the store).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import queue as queue_mod
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jetfm.core.atomic import write_json_atomic
from jetfm.core.errors import ConfigError
from jetfm.core.rounding import largest_remainder
from jetfm.data import store
from jetfm.data.simulate.config import MAX_PYTHIA_SEED, SPLITS, SimulationConfig
from jetfm.data.simulate.processes import pythia_settings

SETTINGS_FILE = "simulation.json"


@dataclass(frozen=True)
class WorkUnit:
    class_name: str
    split: str
    chunk: int
    n_jets: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.class_name}-{self.split}-{self.chunk:05d}"


def unit_seed(base_seed: int, class_name: str, split: str, chunk: int) -> int:
    """Deterministic Pythia seed in [1, 900,000,000) from the run seed and the unit's identity."""
    digest = hashlib.sha256(f"{base_seed}/{class_name}/{split}/{chunk}".encode()).digest()
    return 1 + int.from_bytes(digest[:8], "little") % (MAX_PYTHIA_SEED - 1)


def split_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Integer jets per split summing to ``n`` (largest-remainder rounding, ties in split order)."""
    counts = largest_remainder(n, [n * fractions[s] for s in SPLITS])
    return dict(zip(SPLITS, counts, strict=True))


def plan_units(cfg: SimulationConfig) -> list[WorkUnit]:
    """All work units of a run, in a fixed order."""
    units = []
    per_split = split_counts(cfg.jets_per_class, cfg.fractions())
    for cls in cfg.classes:
        for split in SPLITS:
            n = per_split[split]
            for chunk, start in enumerate(range(0, n, cfg.shard_size)):
                k = min(cfg.shard_size, n - start)
                units.append(WorkUnit(cls, split, chunk, k, unit_seed(cfg.seed, cls, split, chunk)))
    return units


def _settings_record(cfg: SimulationConfig) -> dict[str, Any]:
    d = cfg.physics_dict()
    d["pthat_range"] = list(cfg.pthat_range())
    return json.loads(json.dumps(d, default=str))


def _check_or_record_settings(cfg: SimulationConfig, root: Path) -> None:
    """Refuse to resume into a store made with different physics settings (would mix samples)."""
    path = root / SETTINGS_FILE
    rec = _settings_record(cfg)
    if path.is_file():
        old = json.loads(path.read_text())
        if old != rec:
            diff = sorted(k for k in set(old) | set(rec) if old.get(k) != rec.get(k))
            raise ConfigError(
                "the same settings as the existing simulation in this folder (or a new output folder)",
                file=path,
                field=diff[0] if diff else None,
                found=f"differences in {diff}",
            )
    else:
        write_json_atomic(path, rec)


# ---- worker side -------------------------------------------------------------------------------
_QUEUE: Any = None


def _init_worker(q: Any) -> None:
    global _QUEUE
    _QUEUE = q


def _run_unit(cfg: SimulationConfig, unit: WorkUnit, progress: Any = None) -> dict[str, Any]:
    """Generate one unit and write its shard; returns its statistics."""
    from jetfm.data.simulate.generator import generate_jets

    if progress is None and _QUEUE is not None:
        q = _QUEUE

        def progress(n: int) -> None:
            q.put(n)

    batch, stats = generate_jets(cfg, unit.class_name, unit.n_jets, unit.seed, progress=progress)
    attrs = {
        "generator": "pythia8mc + fastjet",
        "class": unit.class_name,
        "split": unit.split,
        "chunk": unit.chunk,
        "seed": unit.seed,
        "tune": cfg.tune,
        "n_events": stats.n_events,
        "seconds": round(stats.seconds, 3),
    }
    store.write_shard(cfg.output, unit.name, batch, split=unit.split, attrs=attrs)
    return {
        "name": unit.name,
        "n_jets": stats.n_jets,
        "n_events": stats.n_events,
        "seconds": stats.seconds,
    }


# ---- driver ------------------------------------------------------------------------------------
def simulate(cfg: SimulationConfig, progress: bool = True) -> Path:
    """Generate the sample described by ``cfg`` into the store at ``cfg.output``; return its root.

    Resumable: units whose shard exists are skipped. The manifest is (re)written at the end.
    """
    from tqdm.auto import tqdm

    root = Path(cfg.output)
    root.mkdir(parents=True, exist_ok=True)
    _check_or_record_settings(cfg, root)
    units = plan_units(cfg)
    todo = [u for u in units if not store.shard_exists(root, u.name)]
    total = sum(u.n_jets for u in units)
    done = total - sum(u.n_jets for u in todo)
    bar = tqdm(
        total=total, initial=done, unit="jet", desc="simulate", disable=not progress, smoothing=0.1
    )
    t0 = time.perf_counter()
    try:
        if cfg.workers == 1 or len(todo) <= 1:
            for u in todo:
                _run_unit(cfg, u, progress=bar.update)
        else:
            _run_pool(cfg, todo, bar)
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    source = {
        "generator": "jetfm.data.simulate (Pythia 8 + FastJet anti-kT)",
        "settings": _settings_record(cfg),
        "pythia_settings_example": pythia_settings(cfg, cfg.classes[0], 0)[:-1],
        "last_run": {"units_run": len(todo), "seconds": round(elapsed, 2), "workers": cfg.workers},
    }
    store.finalize_store(root, classes=list(cfg.classes), source=source)
    return root


def _run_pool(cfg: SimulationConfig, todo: list[WorkUnit], bar: Any) -> None:
    """Run units on ``cfg.workers`` spawned processes; workers stream jet counts for the bar."""
    ctx = mp.get_context("spawn")  # fork is unsafe with Pythia/FastJet state and threads
    q = ctx.Queue()
    # Largest units first keeps workers busy until the end.
    order = sorted(todo, key=lambda u: -u.n_jets)
    with ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(q,)) as pool:
        pending = [pool.apply_async(_run_unit, (cfg, u)) for u in order]
        while pending:
            try:
                while True:
                    bar.update(q.get(timeout=0.2))
            except queue_mod.Empty:
                pass
            still = []
            for r in pending:
                if r.ready():
                    r.get()  # re-raise a worker's error here
                else:
                    still.append(r)
            pending = still
        try:
            while True:
                bar.update(q.get_nowait())
        except queue_mod.Empty:
            pass
