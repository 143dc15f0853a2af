"""Training throughput of the backbone: jets/s, model FLOP utilisation, peak memory, bucketing gain.

One run measures everything it compares, because these machines are noisy:

* the fp32 matmul throughput torch reaches here (a large square matmul) - the reference for the
  model FLOP utilisation (MFU = model FLOP/s of a training step / matmul FLOP/s);
* a masked-particle-modelling training step (forward + backward + AdamW) of a small (4 x 128) and a
  medium (8 x 256) backbone, each also in a "lean" variant (head dim 32, no biases), on batches
  drawn from a realistic multiplicity distribution;
* batches padded naively to ``max_particles`` versus length-bucketed batches (jets sorted by
  multiplicity, each batch padded only to its longest jet), as the jetfm loader does.

FLOPs are counted by ``torch.utils.flop_counter`` on the actual step (matmuls and attention, forward
and backward), so they include padded positions: MFU measures how busy the hardware is, and the
"useful" column scales it by the fraction of real particles. Each configuration runs in a fresh
process so its peak memory (CPU: peak RSS above the post-import baseline; CUDA: peak allocated) is
its own.

    python benchmarks/train_throughput.py                 # defaults: batch 256, 3 timed steps
    python benchmarks/train_throughput.py --batch-size 128 --steps 2 --device cuda
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# depth, dim, heads, biases. "lean" = the same depth x width with head dim 32 and no biases in the
# linear layers: on the CPU a head dim of 16 halves the attention kernel's efficiency and every bias
# is a copy into the matmul output, neither of which the FLOP count sees
SIZES = {
    "small": (4, 128, 8, True),
    "small-lean": (4, 128, 4, False),
    "medium": (8, 256, 8, True),
    "medium-lean": (8, 256, 8, False),
}


@dataclass
class Result:
    name: str
    padding: str
    n_pad: float  # mean padded length of the batches
    real_frac: float  # real particles / padded positions
    jets_per_s: float
    tflops: float  # achieved model FLOP/s (1e12)
    mfu: float  # achieved / matmul FLOP/s
    peak_mb: float
    matmul_tflops: float  # reference measured in the same process, around the timed steps


def multiplicities(n_jets: int, seed: int, max_particles: int) -> np.ndarray:
    """Jet multiplicities ~ Normal(50, 15) clipped to [5, max_particles] (like QCD/top jets at ~600 GeV)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(50, 15, n_jets).round(), 5, max_particles).astype(np.int64)


def make_batches(
    counts: np.ndarray, batch_size: int, max_particles: int, bucketed: bool, n: int, seed: int
) -> list[tuple[int, np.ndarray]]:
    """``n`` batches of jet multiplicities with their padded length.

    Naive: random jets, padded to ``max_particles``. Bucketed: the pool (``counts``, like one loader
    group of blocks) sorted by multiplicity and cut into batches padded to their longest jet; the
    first returned batch is the longest (warm-up), the others are spread evenly over the sorted
    batches so a few timed steps still see the whole multiplicity distribution.
    """
    rng = np.random.default_rng(seed)
    order = np.argsort(counts, kind="stable") if bucketed else rng.permutation(len(counts))
    out = []
    for s in range(0, len(order) - batch_size + 1, batch_size):
        c = counts[order[s : s + batch_size]]
        out.append((int(c.max()) if bucketed else max_particles, c))
    if not bucketed:
        return out[:n]
    picks = np.linspace(0, len(out) - 2, n - 1).round().astype(int)
    return [out[-1]] + [out[i] for i in picks]


def matmul_tflops(device: str, n: int = 2048, reps: int = 5) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    _sync(device)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _batch(n_pad: int, counts: np.ndarray, device: str, g: torch.Generator) -> dict[str, Any]:
    B = len(counts)
    mask = torch.arange(n_pad)[None] < torch.from_numpy(counts)[:, None]
    x = torch.randn(B, n_pad, 3, generator=g) * mask[..., None]
    return {"x": x.to(device), "mask": mask.to(device)}


def run_config(args: tuple[str, str, dict[str, Any]]) -> Result:
    """Time training steps of one model size on naive or bucketed batches (in a fresh process)."""
    name, padding, opt = args
    from torch.utils.flop_counter import FlopCounterMode

    from jetfm.models import BackboneConfig
    from jetfm.tasks import MPMConfig, MPMTask

    device = opt["device"]
    torch.set_num_threads(opt["threads"])
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    depth, dim, heads, bias = SIZES[name]
    torch.manual_seed(0)
    cfg = MPMConfig(
        backbone=BackboneConfig(dim=dim, depth=depth, heads=heads, bias=bias, n_features=3),
        target="regression",
    )
    task = MPMTask(cfg).to(device)
    optim = torch.optim.AdamW(task.parameters(), lr=1e-4)
    n_pool = max(16, opt["steps"] + 1)  # batches per sorted pool (the loader sorts ~16 at once)
    counts = multiplicities(opt["batch_size"] * n_pool, 0, opt["max_particles"])
    bucketed = padding == "bucketed"
    batches = make_batches(
        counts, opt["batch_size"], opt["max_particles"], bucketed, opt["steps"] + 1, seed=1
    )
    g = torch.Generator().manual_seed(0)
    data = [_batch(n, c, device, g) for n, c in batches]

    def step(b: dict[str, Any]) -> None:
        out = task.loss(b)
        optim.zero_grad(set_to_none=True)
        out["loss"].backward()
        optim.step()

    step(data[0])  # warm-up (allocator, kernels)
    mm_before = matmul_tflops(device)
    with FlopCounterMode(display=False) as fc:
        task.loss(data[1])["loss"].backward()
    flops_first = fc.get_total_flops()
    n_first = data[1]["x"].shape[0] * data[1]["x"].shape[1]
    _sync(device)
    t0 = time.perf_counter()
    for b in data[1:]:
        step(b)
    _sync(device)
    dt = time.perf_counter() - t0
    mm = 0.5 * (mm_before + matmul_tflops(device))
    n_positions = sum(b["x"].shape[0] * b["x"].shape[1] for b in data[1:])
    n_real = sum(int(b["mask"].sum()) for b in data[1:])
    # FLOPs scale ~linearly with padded positions at these lengths; attention's N^2 part is small
    flops = flops_first * n_positions / n_first
    jets = sum(b["x"].shape[0] for b in data[1:])
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    tflops = flops / dt / 1e12
    return Result(
        name=f"{name} ({depth}x{dim}/{heads}{'' if bias else ' nb'})",
        padding=padding,
        n_pad=float(np.mean([b["x"].shape[1] for b in data[1:]])),
        real_frac=n_real / n_positions,
        jets_per_s=jets / dt,
        tflops=tflops,
        mfu=tflops / mm,
        peak_mb=peak,
        matmul_tflops=mm,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-particles", type=int, default=128)
    p.add_argument("--steps", type=int, default=3, help="timed training steps per configuration")
    p.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated of {list(SIZES)}")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    mm = matmul_tflops(args.device)
    opt = {
        "device": args.device,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "max_particles": args.max_particles,
        "steps": args.steps,
    }
    jobs = [(s, pad, opt) for s in args.sizes.split(",") for pad in ("naive", "bucketed")]
    print(
        f"device {args.device}, threads {args.threads}, batch {args.batch_size}, "
        f"max_particles {args.max_particles}, {args.steps} timed steps, multiplicity ~ N(50, 15)"
    )
    print(f"fp32 matmul (2048^3) before the runs: {mm:.3f} TFLOP/s")
    hdr = (
        f"{'model':<26}{'batches':<10}{'mean N':>7}{'real':>6}{'jets/s':>9}{'TFLOP/s':>9}"
        f"{'mm TF/s':>9}{'MFU':>7}{'useful':>8}{'peak MB':>9}"
    )
    print(hdr)
    print("-" * len(hdr), flush=True)
    ctx = mp.get_context("spawn")
    results = []
    for job in jobs:  # one fresh process each, one at a time (so timings do not overlap)
        with ctx.Pool(1) as pool:
            r = pool.apply(run_config, (job,))
        results.append(r)
        print(
            f"{r.name:<26}{r.padding:<10}{r.n_pad:>7.1f}{r.real_frac:>6.2f}{r.jets_per_s:>9.1f}"
            f"{r.tflops:>9.3f}{r.matmul_tflops:>9.3f}{r.mfu:>7.2f}{r.mfu * r.real_frac:>8.2f}"
            f"{r.peak_mb:>9.0f}",
            flush=True,
        )
    mm_after = matmul_tflops(args.device)
    print(f"fp32 matmul after the runs: {mm_after:.3f} TFLOP/s (a large change = a noisy machine)")
    print(
        "real = real particles / padded positions; mm TF/s = fp32 matmul measured in the same "
        "process just before and after the timed steps (the MFU reference); useful = MFU x real"
    )
    print()
    by = {(r.name, r.padding): r for r in results}
    for name in dict.fromkeys(r.name for r in results):
        naive, buck = by.get((name, "naive")), by.get((name, "bucketed"))
        if naive and buck:
            raw = buck.jets_per_s / naive.jets_per_s
            # jets/s per matmul TFLOP/s cancels a machine that got faster or slower in between
            norm = raw * naive.matmul_tflops / buck.matmul_tflops
            print(
                f"{name}: bucketed / naive jets/s = {raw:.2f} raw, {norm:.2f} normalised by the "
                f"matmul reference (target >= 1.5); MFU naive {naive.mfu:.2f}, bucketed "
                f"{buck.mfu:.2f} (target >= 0.50)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
