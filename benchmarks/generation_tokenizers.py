"""Which tokenizer can a generator be built on? Decoded-jet fidelity against the truth floor.

For each tokenizer recipe: fit it on the store's train split, tokenize the store's val jets and decode
them back to physical jets (the same path generated jets take), then score them against the test jets
with the generation metrics (KL in quantile bins, W1M, W1P, W1EFP, FPD), each divided by its truth
floor (test vs val, same number of jets). A generator can at best reach these ratios, so a recipe
whose decoded jets already miss the floor by far cannot meet a "within 2x of the floor" target.
Recipes are ``kmeans:K:POWER[:ANGULAR[:RESIDUAL]]`` (k-means, K cells, particles weighted by pT^POWER,
deta and dphi weighted by ANGULAR in the distance: ``kmeans_feature_weights``; two-level tokens,
K / RESIDUAL cells x RESIDUAL shared residual codes: ``kmeans_residual_codes``) or a tokenizer
checkpoint folder (e.g. a trained VQ-VAE).

    python benchmarks/generation_tokenizers.py --store data/topqcd \\
        --recipes kmeans:512:0,kmeans:8192:0,kmeans:8192:0.5,kmeans:8192:0.75 [--jets 2000]
    python benchmarks/generation_tokenizers.py --store data/topqcd --jets 8000 \\
        --recipes kmeans:8192:0.75,kmeans:8192:0.75:2,kmeans:32768:0.75,kmeans:32768:0.75:1.5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from jetfm.core.config import from_dict
from jetfm.data.store import Store
from jetfm.evaluate.decoding import tokenize_and_decode
from jetfm.evaluate.generative import compare_with_floor, default_metrics, jet_sample_from_batch
from jetfm.tokenizers import Tokenizer
from jetfm.tokenizers.config import TokenizerConfig
from jetfm.tokenizers.store import train_tokenizer_on_store


def _tokenizer(recipe: str, store: str, out: Path, max_particles: int) -> Tokenizer:
    if not recipe.startswith("kmeans:"):
        return Tokenizer.from_pretrained(recipe)
    _, k, power, *rest = recipe.split(":")
    angular = float(rest[0]) if rest else 1.0
    weights = {"deta": angular, "dphi": angular} if angular != 1.0 else {}
    cfg = from_dict(
        TokenizerConfig,
        {
            "type": "kmeans",
            "codebook_size": int(k),
            "kmeans_feature_weights": weights,
            "kmeans_residual_codes": int(rest[1]) if len(rest) > 1 else 0,
            "quantizer": {"kmeans_iters": 15},
            "train": {
                "max_kmeans_particles": 1_000_000,
                "kmeans_pt_weight": float(power),
                "progress": False,
            },
        },
    )
    path = train_tokenizer_on_store(
        cfg, store, out / recipe.replace(":", "_"), max_particles=max_particles
    )
    return Tokenizer.from_pretrained(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--recipes", default="kmeans:512:0,kmeans:8192:0,kmeans:8192:0.75")
    ap.add_argument(
        "--jets", type=int, default=2000, help="jets per sample (reference, floor, decoded)"
    )
    ap.add_argument("--max-particles", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    st = Store(args.store)
    rng = np.random.default_rng(0)
    test, val = st.read("test"), st.read("val")
    n = min(args.jets, test.n_jets, val.n_jets)
    ref = test.select(rng.permutation(test.n_jets)[:n]).truncate(args.max_particles)
    ref2 = val.select(rng.permutation(val.n_jets)[:n]).truncate(args.max_particles)
    s_ref, s_ref2 = jet_sample_from_batch(ref), jet_sample_from_batch(ref2)
    metrics = default_metrics(s_ref)
    names = ["kl_pt", "kl_mass", "kl_tau21", "kl_tau32", "w1m", "w1p", "w1efp", "fpd"]
    print(f"decoded val jets vs test jets, {n} each; value / truth floor (test vs val)\n")
    print("| recipe | " + " | ".join(names) + " | fit s |")
    print("|---|" + "---:|" * (len(names) + 1))
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes.split(","):
            t0 = time.perf_counter()
            tok = _tokenizer(recipe, args.store, Path(tmp), args.max_particles)
            fit = time.perf_counter() - t0
            dec = tokenize_and_decode(ref2, tok, max_particles=args.max_particles)
            rows = {
                r["metric"]: r
                for r in compare_with_floor(jet_sample_from_batch(dec), s_ref, s_ref2, metrics)
            }
            cells = [f"{rows[m]['ratio']:.2f}" for m in names]
            print(f"| {recipe} | " + " | ".join(cells) + f" | {fit:.0f} |", flush=True)


if __name__ == "__main__":
    main()
