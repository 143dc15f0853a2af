"""N-subjettiness jet tokens: the torch exclusive-kT twin against the FastJet-based observable.

``task.jet_tokens`` may bin ``tau21`` / ``tau32``, computed on every training batch by
:func:`jetfm.tasks.jet_structure.kt_nsubjettiness` (torch, any device, small-angle E-scheme merging). This
script checks it on a store's test jets (their ``--max-particles`` leading particles, angles to
the massless jet axis) against :func:`jetfm.evaluate.generative.jet_sample_from_batch`'s
FastJet-based tau ratios, which the generation metrics use, and times it per training batch.

    python benchmarks/kt_nsubjettiness.py --store data/topqcd80k --jets 4000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from jetfm.data.store import Store
from jetfm.evaluate.generative import jet_sample_from_batch
from jetfm.tasks.jet_structure import kt_nsubjettiness


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--jets", type=int, default=4000)
    ap.add_argument("--max-particles", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64, help="jets per timed batch")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batch = Store(args.store).read("test")
    batch = batch.select(np.arange(min(args.jets, batch.n_jets))).truncate(args.max_particles)
    ref = jet_sample_from_batch(batch)  # massless axis and FastJet taus of these particles
    # (deta, dphi, pT / jet pT) to that axis, padded; the tau ratios do not depend on the pT scale
    feats = torch.as_tensor(ref.particles, dtype=torch.float32)  # (B, N, 3)
    x = feats[..., [2, 0, 1]]  # (pT, deta, dphi)
    m = torch.as_tensor(ref.mask)
    got = kt_nsubjettiness(x[..., 0], x[..., 1], x[..., 2], m)
    print(f"{batch.n_jets} test jets of {args.store}, {args.max_particles} leading particles")
    for k in ("tau21", "tau32"):
        a, b = got[k].numpy(), np.asarray(ref.jets[k])
        rho = spearmanr(a, b).statistic
        d = np.abs(a - b)
        print(
            f"  {k}: Spearman {rho:.3f}; |torch - FastJet| median {np.median(d):.4f}, "
            f"90% {np.quantile(d, 0.9):.4f}; medians {np.median(a):.3f} vs {np.median(b):.3f}"
        )
    xb, mb = x[: args.batch], m[: args.batch]
    kt_nsubjettiness(xb[..., 0], xb[..., 1], xb[..., 2], mb)  # warm-up
    t0 = time.perf_counter()
    for _ in range(5):
        kt_nsubjettiness(xb[..., 0], xb[..., 1], xb[..., 2], mb)
    ms = (time.perf_counter() - t0) / 5 * 1000
    print(f"  {ms:.0f} ms per batch of {len(xb)} jets ({args.threads} thread(s))")


if __name__ == "__main__":
    main()
