"""Tokenization quality for codebook sizes x tokenizer types on a simulated top+QCD store.

For each (type, codebook size): train on the store's train split, evaluate on its test split with the
quality suite (codebook use, perplexity, jet-mass resolution, classifier AUC ratio decoded/original),
print one Markdown table. Training steps are the same for every size of a type; the jet-conditional
(transformer) tokenizer is ~50x slower to train on a CPU, so it gets fewer steps (printed).

    python benchmarks/tokenizer_quality.py --store data/topqcd [--steps 600] [--cond-steps 150]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from jetfm.core.config import load_config
from jetfm.evaluate.tokenizer_eval import evaluate_tokenizer_on_store
from jetfm.tokenizers.config import TokenizerConfig
from jetfm.tokenizers.store import train_tokenizer_on_store

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--sizes", default="512,2048,8192")
    ap.add_argument("--types", default="particle,conditional")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--cond-steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--eval-jets", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipes = {"particle": "tokenizer.yaml", "conditional": "tokenizer_omnijet.yaml"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.types.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                cfg = load_config(TokenizerConfig, ROOT / "configs" / recipes[kind])
                steps = args.steps if kind == "particle" else args.cond_steps
                bs = args.batch_size if kind == "particle" else max(16, args.batch_size // 4)
                cfg = dataclasses.replace(
                    cfg,
                    codebook_size=size,
                    train=dataclasses.replace(
                        cfg.train, steps=steps, batch_size=bs, progress=False
                    ),
                )
                out = Path(tmp) / f"{kind}-{size}"
                t0 = time.perf_counter()
                tok = train_tokenizer_on_store(cfg, args.store, out / "tok", max_particles=128)
                train_s = time.perf_counter() - t0
                q = evaluate_tokenizer_on_store(
                    tok, args.store, out / "eval", max_jets=args.eval_jets
                )
                rows.append(
                    (
                        kind, size, cfg.latent_dim, steps, bs, train_s,
                        q["codebook"]["used_fraction"], q["codebook"]["perplexity"],
                        q["jets"]["mass"]["bias"], q["jets"]["mass"]["half_width_68"],
                        q["jets"]["tau21"]["bias"],
                        q["classifier"]["auc_original"], q["classifier"]["auc_decoded"],
                        q["classifier"]["auc_ratio"],
                    )
                )  # fmt: skip
                print(_row(rows[-1]), flush=True)  # each row as soon as it exists
    print("\n" + HEADER)
    for r in rows:
        print(_row(r))


HEADER = (
    "| tokenizer | codebook | latent | steps x batch | train s | codes used | perplexity |"
    " mass rel. bias | mass rel. 68% half-width | tau21 bias | AUC orig | AUC decoded | AUC ratio |\n"
    "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _row(r: tuple) -> str:
    return (
        f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} x {r[4]} | {r[5]:.0f} | {r[6]:.1%} | {r[7]:.0f} |"
        f" {r[8]:+.3f} | {r[9]:.3f} | {r[10]:+.3f} | {r[11]:.4f} | {r[12]:.4f} | {r[13]:.4f} |"
    )


if __name__ == "__main__":
    main()
