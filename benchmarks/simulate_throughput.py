"""Simulation throughput: jets/s per class with 1 and 2 worker processes, and their ratio.

Each measurement is a full ``simulate()`` run (Pythia init, generation, clustering, truth matching,
N-subjettiness, shard writes, manifest) into a fresh temporary store, all jets in the train split,
cut into ``--units`` shards so that 2 workers have work to share. MPI, ISR and FSR are on (defaults).

    .venv/bin/python benchmarks/simulate_throughput.py --classes QCD Tbqq --jets 300

Machines are noisy: compare the 1- and 2-worker numbers of the same run, not absolute rates across runs.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from jetfm.data.simulate import SimulationConfig, simulate
from jetfm.data.store import Store


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(
    class_name: str, n_jets: int, units: int, workers: int, seed: int
) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (this process + finished workers) and events of one simulate() run."""
    tmp = Path(tempfile.mkdtemp(prefix="jetfm-bench-"))
    try:
        cfg = SimulationConfig(
            classes=[class_name],
            jets_per_class=n_jets,
            shard_size=-(-n_jets // units),
            train_fraction=1.0,
            val_fraction=0.0,
            test_fraction=0.0,
            workers=workers,
            seed=seed,
            output=tmp / "store",
        )
        t0, c0 = time.perf_counter(), _cpu_seconds()
        simulate(cfg, progress=False)
        seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        store = Store(cfg.output)
        assert store.n_jets("train") == n_jets
        events = sum(int(s.get("n_events", 0)) for s in _shard_attrs(store))
        return seconds, cpu, events
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _shard_attrs(store: Store) -> list[dict]:
    import json

    import h5py

    out = []
    for path in store.shards("train"):
        with h5py.File(path, "r") as f:
            out.append(json.loads(f.attrs["attrs"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", nargs="+", default=["QCD", "Tbqq"])
    ap.add_argument("--jets", type=int, default=300, help="jets per class and measurement")
    ap.add_argument("--units", type=int, default=4, help="shards (work units) per measurement")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    rows = []
    for cls in args.classes:
        t1, c1, ev1 = measure(cls, args.jets, args.units, 1, args.seed)
        t2, _, _ = measure(cls, args.jets, args.units, 2, args.seed)
        rows.append((cls, args.jets, ev1, args.jets / c1, args.jets / t1, args.jets / t2, t1 / t2))
    print(
        f"simulate throughput ({os.cpu_count()} CPUs visible, {args.jets} jets/class, {args.units} shards, MPI+ISR+FSR on)"
    )
    head = (
        f"{'class':<6} {'jets':>6} {'events':>7} {'jets/ev':>8} {'jets/CPU-s':>11} "
        f"{'1 worker jets/s':>16} {'2 workers jets/s':>17} {'ratio 2/1':>10}"
    )
    print(head)
    print("-" * len(head))
    for cls, n, ev, rc, r1, r2, ratio in rows:
        print(
            f"{cls:<6} {n:>6d} {ev:>7d} {n / max(ev, 1):>8.2f} {rc:>11.1f} "
            f"{r1:>16.1f} {r2:>17.1f} {ratio:>10.2f}"
        )
    print(
        "jets/CPU-s: from the 1-worker run (per-core speed, insensitive to other load on the machine)"
    )


if __name__ == "__main__":
    main()
