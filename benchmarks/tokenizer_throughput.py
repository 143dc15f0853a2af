"""Tokenizer throughput: encode and decode jets/s per tokenizer type, and the nearest-code lookup.

Toy jets with a JetClass-like multiplicity (mean ~55-70, at most 128 particles) are standardised with
a fitted kin3 preprocessing; each tokenizer's codebook is k-means-initialised from one batch of
latents (throughput does not depend on training). Everything is timed in the same run, so the ratios
are meaningful even on a noisy machine. Target (issue 3): the default tokenizer (configs/tokenizer.yaml)
encodes >= 2,000 jets/s on 2 CPU cores.

Second table: the nearest-code lookup alone for one batch of latents (8192 codes), our fused matmul +
argmin and KD-tree versus ``vector_quantize_pytorch.VectorQuantize`` on the same latents (padded, as
it receives them).

    .venv/bin/python benchmarks/tokenizer_throughput.py [--jets 4000] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import make_toy_jets  # noqa: E402

from jetfm.core.config import load_config  # noqa: E402
from jetfm.data.features import Preprocessing, compute_features  # noqa: E402
from jetfm.data.loader import pad_batch  # noqa: E402
from jetfm.nn.quantizers import nearest_code  # noqa: E402
from jetfm.tokenizers import KMeansTokenizer, TokenizerConfig, build_tokenizer  # noqa: E402


def best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jets", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-vqp", action="store_true", help="skip vector_quantize_pytorch (slow)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    batch = make_toy_jets(args.jets, seed=0, mean_mult=55.0)
    pre = Preprocessing.for_set("kin3").fit(batch)
    x = pre.transform(compute_features(batch, pre.feature_names)).astype(np.float32)
    data = pad_batch(x, batch.offsets, batch, np.arange(batch.n_jets), 128)
    X, M = data["x"], data["mask"]
    print(
        f"{args.jets} toy jets, mean multiplicity {M.sum(1).float().mean():.1f}, N = {M.shape[1]};"
        f" torch threads {args.threads}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )

    rows = []
    for name in (
        "tokenizer.yaml",
        "tokenizer_omnijet.yaml",
        "tokenizer_fsq.yaml",
        "tokenizer_kmeans.yaml",
    ):
        cfg = load_config(TokenizerConfig, ROOT / "configs" / name)
        tok = build_tokenizer(cfg, preprocessing=pre.to_dict())
        init = slice(0, 512)
        if isinstance(tok, KMeansTokenizer):
            tok.fit(X[M][:100_000], iters=5)
        else:
            tok.train()
            with torch.no_grad():
                for _ in range(cfg.quantizer.kmeans_init_batches):
                    tok(X[init], M[init])
        t_train = None
        if not isinstance(tok, KMeansTokenizer):  # eager training steps, batch 256 jets
            opt = torch.optim.AdamW(tok.parameters(), lr=1e-4)

            def step() -> None:
                out = tok(X[:256], M[:256])  # noqa: B023
                opt.zero_grad()  # noqa: B023
                out.loss.backward()
                opt.step()  # noqa: B023

            step()
            t_train = best_of(step, args.repeats)
        tok.eval()
        tok.encode(X[:64], M[:64])  # warm-up
        t_enc = best_of(lambda: tok.encode(X, M), args.repeats)  # noqa: B023
        ids = tok.encode(X, M)
        t_dec = best_of(lambda: tok.decode(ids, M), args.repeats)  # noqa: B023
        train = "-" if t_train is None else f"{256 / t_train:,.0f}"
        rows.append(
            (name, cfg.type, cfg.codebook_size, args.jets / t_enc, args.jets / t_dec, train)
        )

    print()
    print(
        "| config | type | codes | encode jets/s | decode jets/s | encode / 2000 target"
        " | train jets/s (batch 256) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, typ, k, enc, dec, train in rows:
        print(f"| {name} | {typ} | {k} | {enc:,.0f} | {dec:,.0f} | {enc / 2000:.2f} | {train} |")

    # nearest-code lookup alone: 256 jets x up to 128 particles, 8192 codes of dimension 4
    b = slice(0, 256)
    m = M[b]
    z_pad = torch.randn(m.shape[0], m.shape[1], 4)
    z = z_pad[m]
    cb = torch.randn(8192, 4)
    t_mm = best_of(lambda: nearest_code(z, cb, backend="matmul"), args.repeats)
    t_kd = best_of(lambda: nearest_code(z, cb, backend="kdtree"), args.repeats)
    print()
    print(
        f"nearest code, 256 jets ({int(m.sum())} real particles, padded to {m.numel()}), 8192 codes, dim 4"
    )
    print("| method | seconds | vs matmul |")
    print("|---|---:|---:|")
    print(f"| jetfm fused matmul + argmin (real particles) | {t_mm:.3f} | 1.00 |")
    print(f"| jetfm KD-tree (real particles) | {t_kd:.3f} | {t_kd / t_mm:.2f} |")
    if not args.skip_vqp:
        from vector_quantize_pytorch import VectorQuantize

        vq = VectorQuantize(dim=4, codebook_size=8192).eval()
        with torch.no_grad():
            t_vq = best_of(lambda: vq(z_pad, mask=m), 1)
        print(
            f"| vector_quantize_pytorch.VectorQuantize (padded, mask) | {t_vq:.3f} | {t_vq / t_mm:.2f} |"
        )


if __name__ == "__main__":
    main()
