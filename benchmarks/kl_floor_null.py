"""How much a one-pair truth floor of the quantile-binned KL scatters.

``jetfm evaluate-generation`` reports each KL next to its truth floor: the same KL between two
independent simulated samples. That floor is one draw of a random quantity. For any continuous
observable its distribution depends only on the sample sizes and the number of bins (the KL of
quantile bins is invariant under monotone maps), so it can be drawn from normal samples. Its mean
is about ``(bins - 1) / n`` for two samples of ``n`` jets (each sample's bin fractions scatter by
chi-square / 2n). With ``--store``, the script also draws the floor for a real observable of a
store's split, in disjoint pairs, to show the same spread on jets.

    python benchmarks/kl_floor_null.py --jets 8000 --bins 30 --pairs 400
    python benchmarks/kl_floor_null.py --jets 8000 --store data/topqcd80k --split train
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from jetfm.evaluate.generative import jet_sample_from_batch, kl_quantile


def _summary(name: str, values: list[float]) -> None:
    v = np.asarray(values)
    q05, q50, q95 = np.quantile(v, [0.05, 0.5, 0.95])
    print(
        f"{name}: {len(v)} pairs, mean {v.mean():.5f}, std {v.std(ddof=1):.5f} "
        f"({v.std(ddof=1) / v.mean():.0%} of the mean), 5% / 50% / 95% quantiles "
        f"{q05:.5f} / {q50:.5f} / {q95:.5f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jets", type=int, default=8000, help="jets per sample")
    ap.add_argument("--bins", type=int, default=30, help="quantile bins of the KL")
    ap.add_argument("--pairs", type=int, default=400, help="pairs of normal samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", type=Path, help="also: disjoint pairs of this store's jets")
    ap.add_argument("--split", default="train")
    ap.add_argument("--observables", default="tau32,tau21,mass,pt")
    ap.add_argument("--max-particles", type=int, default=64, help="leading particles kept")
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    n, bins = args.jets, args.bins
    null = [kl_quantile(rng.normal(size=n), rng.normal(size=n), bins) for _ in range(args.pairs)]
    print(f"expected mean (bins - 1) / n = {(bins - 1) / n:.5f}")
    _summary(f"normal samples, n = {n}, {bins} bins", null)
    if args.store is None:
        return
    from jetfm.data.store import Store

    batch = Store(args.store).read(args.split).truncate(args.max_particles)
    batch = batch.select(rng.permutation(batch.n_jets))
    k = batch.n_jets // (2 * n)
    if k < 2:
        raise SystemExit(f"{args.store} split {args.split}: {batch.n_jets} jets, need {4 * n}")
    s = jet_sample_from_batch(batch.select(np.arange(2 * k * n)), with_particles=False)
    for obs in args.observables.split(","):
        x = s.jets[obs]
        vals = [
            kl_quantile(x[2 * i * n : (2 * i + 1) * n], x[(2 * i + 1) * n : (2 * i + 2) * n], bins)
            for i in range(k)
        ]
        _summary(f"{args.store} ({args.split}) {obs}, massless", vals)


if __name__ == "__main__":
    main()
