"""Loader throughput: jets/s from the native store into padded (B, N, F) tensors.

Writes a temporary store of toy jets with a JetClass-like multiplicity (mean ~70, the Pythia mean for
top/QCD at 500-1000 GeV), then times full epochs of the streaming loader for several settings in the
same run. Prints one table; the target (issue 2) is >= 50,000 jets/s for kin3 at N = 128 on 2 cores.

    python benchmarks/loader_throughput.py [--jets 100000] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import make_toy_jets

from jetfm.data.features import Preprocessing
from jetfm.data.loader import LoaderConfig, make_dataloader
from jetfm.data.store import Store, finalize_store, write_shard


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jets", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--shard-size", type=int, default=20_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        t0 = time.perf_counter()
        for k, start in enumerate(range(0, args.jets, args.shard_size)):
            n = min(args.shard_size, args.jets - start)
            write_shard(
                root, f"train-{k:04d}", make_toy_jets(n, seed=k, mean_mult=55.0), split="train"
            )
        finalize_store(root, classes=["QCD", "Tbqq"], source={"generator": "toy"})
        print(f"wrote {args.jets} toy jets in {time.perf_counter() - t0:.1f} s")
        store = Store(root)
        train = store.read("train", limit=5000)
        rows = []
        for fs in ("kin3", "full"):
            pre = Preprocessing.for_set(fs).fit(train)
            for workers in (0, 2):
                for bucketing in (False, True):
                    cfg = LoaderConfig(
                        batch_size=args.batch_size,
                        max_particles=128,
                        num_workers=workers,
                        bucketing=bucketing,
                    )
                    list(make_dataloader(root, "train", pre, cfg))  # warm the page cache
                    t0 = time.perf_counter()
                    n_jets = real = tot = 0
                    for b in make_dataloader(root, "train", pre, cfg, epoch=1):
                        n_jets += b["x"].shape[0]
                        real += int(b["mask"].sum())
                        tot += b["mask"].numel()
                    dt = time.perf_counter() - t0
                    rows.append((fs, workers, bucketing, n_jets / dt, 1 - real / tot))
    print("\n| features | workers | bucketing | jets/s | padding fraction | ratio to 50k target |")
    print("|---|---|---|---|---|---|")
    for fs, w, bk, rate, pad in rows:
        print(f"| {fs} | {w} | {bk} | {rate:,.0f} | {pad:.2f} | {rate / 50_000:.2f} |")


if __name__ == "__main__":
    main()
