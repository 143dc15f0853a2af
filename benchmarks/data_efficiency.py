"""Data efficiency of pre-trained backbones: MPM- and NTP-pretrained vs the same network from scratch.

For one labelled store (e.g. top vs QCD, or the multi-class sample) this script

1. fits the kin3 standardisation and a k-means particle tokenizer on the training split,
2. pre-trains a masked-particle-modelling backbone (k-means token targets) and a next-token
   backbone (causal, token inputs) on the training jets *without labels*,
3. runs the data-efficiency sweep (labelled-set sizes x frozen/finetune/scratch x seeds, fixed
   test split) for each backbone, and
4. prints one table and the label-efficiency ratio measured in this run: how many labelled jets
   the from-scratch network (same architecture) needs to reach the accuracy that the fine-tuned
   pre-trained backbone reaches with ``--ref-labels`` (default 1000) labels, divided by that number.

Everything is resumable (pre-training skips finished runs, the sweep skips finished cells), so an
interrupted benchmark continues where it stopped. Example (2 CPU cores, ~minutes per store)::

    jetfm simulate -o data/topqcd --classes QCD,Tbqq -n 3000
    python benchmarks/data_efficiency.py --store data/topqcd --out runs/bench_de_topqcd

Shapes and sizes are kept tiny by default so it runs on a laptop; scale ``--dim``, ``--depth``,
``--pretrain-steps`` and ``--max-steps`` on a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from jetfm.core.config import from_dict
from jetfm.data.features import (
    JET_KEYS,
    Preprocessing,
    required_particle_fields,
    resolve_feature_names,
)
from jetfm.data.loader import load_padded
from jetfm.data.store import Store
from jetfm.evaluate.sweep import SweepConfig, labels_to_match, markdown_table, run_sweep
from jetfm.tokenizers import KMeansTokenizer, TokenizerConfig
from jetfm.train import latest_checkpoint, load_training_state, pretrain


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, required=True, help="labelled native store")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_data_efficiency"))
    ap.add_argument("--n-labels", default="100,300,1000,3000")
    ap.add_argument("--ref-labels", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--regimes", default="frozen,finetune,scratch")
    ap.add_argument("--backbones", default="mpm,ntp")
    ap.add_argument("--signal", default=None, help="multi-class: signal class of the rejections")
    ap.add_argument("--background", default=None)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--codebook", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-particles", type=int, default=64)
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--pretrain-lr", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=float, default=5.0)
    ap.add_argument("--min-steps", type=int, default=50)
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--test-jets", type=int, default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    return ap.parse_args(argv)


def _train_section(out: Path, steps: int, lr: float) -> dict[str, Any]:
    return {
        "output_dir": str(out),
        "max_steps": steps,
        "optimizer": {"lr": lr, "weight_decay": 0.01},
        "schedule": {"name": "cosine", "warmup_steps": min(20, steps // 10)},
        "accelerator": "cpu",
        "devices": 1,
        "log_every": 10,
        "checkpoint_every": steps,
        "keep_last": 1,
        "val_every": 0,
        "progress_bar": False,
        "quiet": True,
    }


def _tokenizer(a: argparse.Namespace, store: Store, pre: Preprocessing) -> Path:
    folder = a.out / "tokenizer"
    if (folder / "model.safetensors").is_file():
        return folder
    d = load_padded(store.root, "train", pre, max_particles=a.max_particles, limit=5000)
    tok = KMeansTokenizer(TokenizerConfig(type="kmeans", codebook_size=a.codebook), pre.to_dict())
    tok.fit(d["x"][d["mask"]], seed=0)
    return tok.save_pretrained(folder)


def _pretrain(a: argparse.Namespace, store: Store, kind: str, tok: Path) -> Path:
    run = a.out / f"pretrain_{kind}"
    last = latest_checkpoint(run) if (run / "checkpoints").is_dir() else None
    if last is not None and load_training_state(last).global_step >= a.pretrain_steps:
        return run
    bb: dict[str, Any] = {"dim": a.dim, "depth": a.depth, "heads": a.heads, "n_features": 3}
    if kind == "mpm":
        task = {"name": "mpm", "target": "kmeans", "tokenizer": str(tok), "backbone": bb}
    else:
        task = {
            "name": "ntp",
            "tokenizer": str(tok),
            "backbone": {**bb, "causal": True, "input": "tokens"},
        }
    cfg = {
        "data": {
            "store": str(store.root),
            "feature_set": "kin3",
            "val_split": None,
            "preprocessing_jets": 50_000,
        },
        "loader": {"batch_size": a.batch_size, "max_particles": a.max_particles},
        "task": task,
        "train": _train_section(run, a.pretrain_steps, a.pretrain_lr),
    }
    path = a.out / f"pretrain_{kind}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    pretrain(path, [], resume=last is not None)
    print(
        f"pre-trained {kind}: {a.pretrain_steps} steps in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return run


def _sweep(a: argparse.Namespace, store: Store, kind: str, run: Path) -> list[dict[str, Any]]:
    cfg = from_dict(
        SweepConfig,
        {
            "finetune": {
                "pretrained": str(run),
                "backbone_lr_factor": 0.1,
                "head": {"kind": "class_attention", "depth": 1},
                "data": {"store": str(store.root), "val_split": None},
                "loader": {"batch_size": a.batch_size, "max_particles": a.max_particles},
                "train": _train_section(a.out / "unused", a.max_steps, a.lr),
            },
            "output_dir": str(a.out / f"sweep_{kind}"),
            "n_labels": [int(n) for n in a.n_labels.split(",")],
            "regimes": a.regimes.split(","),
            "seeds": list(range(a.seeds)),
            "test_jets": a.test_jets,
            "epochs": a.epochs,
            "min_steps": a.min_steps,
            "signal": a.signal,
            "background": a.background,
        },
    )
    t0 = time.perf_counter()
    res = run_sweep(cfg, progress=lambda s: print(f"  {kind} {s}", flush=True))
    print(
        f"sweep {kind}: {res.n_trained} cells trained in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return res.rows


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    store = Store(a.store)
    names = resolve_feature_names("kin3")
    data = store.read(
        "train",
        limit=50_000,
        particle_fields=required_particle_fields(names),
        jet_fields=list(JET_KEYS),
    )
    pre = Preprocessing.for_set(names, max_particles=a.max_particles).fit(data)  # == pretrain's fit
    tok = _tokenizer(a, store, pre)
    all_rows: dict[str, list[dict[str, Any]]] = {}
    for kind in a.backbones.split(","):
        run = _pretrain(a, store, kind, tok)
        all_rows[kind] = _sweep(a, store, kind, run)

    print()
    print(
        f"store {store.root} classes {store.classes}: train {store.n_jets('train')}, "
        f"test {store.n_jets('test') if a.test_jets is None else a.test_jets} jets; "
        f"torch threads {torch.get_num_threads()}"
    )
    summary: dict[str, Any] = {}
    for kind, rows in all_rows.items():
        print(
            f"\n### {kind.upper()}-pretrained backbone (dim {a.dim}, depth {a.depth}); mean ± std over {a.seeds} seeds\n"
        )
        print(markdown_table(rows))
        ref = [r for r in rows if r["regime"] == "finetune" and r["n_labels"] == a.ref_labels]
        if not ref or not any(r["regime"] == "scratch" for r in rows):
            continue
        target = ref[0]["accuracy"]
        need = labels_to_match(rows, target, "scratch", "accuracy")
        ratio = need / a.ref_labels
        shown = (
            f"> {max(r['n_labels'] for r in rows) / a.ref_labels:g}"
            if math.isinf(ratio)
            else f"{ratio:.2f}"
        )
        print(
            f"{kind}: fine-tuned accuracy with {a.ref_labels} labels = {target:.4f}; scratch needs "
            f"{'more than the largest size' if math.isinf(need) else f'{need:.0f}'} labels "
            f"-> label ratio scratch/pretrained = {shown}"
        )
        summary[kind] = {"target_accuracy": target, "scratch_labels_needed": need, "ratio": ratio}
    (a.out / "data_efficiency.json").write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(a).items()}, "ratios": summary, "rows": all_rows},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
