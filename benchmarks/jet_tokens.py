"""Jet tokens: how closely generated jets follow the jet-level bins they were drawn in.

For a next-token checkpoint trained with ``task.jet_tokens``:

1. draws ``--jets`` jets (classes alternating), then compares each jet's drawn bins with the bins
   its generated particles fall in (Spearman correlation, fraction within 0/1/3 bins); with
   ``--consistent``, by consistent sampling (``jetfm sample consistent=true``: STOP inside the
   multiplicity bin, jets off their bins redrawn up to ``--max-redraws`` times), and prints the
   draws per jet and the rate;
2. for each ``--conditions`` entry ``CLASS:PT:MASS`` draws ``--jets-per-condition`` jets with
   ``jet_condition = {pt, mass}`` and prints quantiles of their mass and pT beside those of the
   simulated ``--reference`` test jets of that class in the same pT and mass bins.

A jet token bins the jet its particle tokens decode to (massless particles, the leading
``max_particles``; :meth:`NTPTask.jet_observables`), and generated jets are built the same way, so
the simulated jets are binned after tokenizing and decoding them (``tokenize_and_decode``) and the
quantiles are those of their massless leading ``--max-length`` particles. (Checkpoints from before
2026-12-02, such as runs E and F, binned the stored all-constituent jet instead: about 2 mass bins
higher.)

    python benchmarks/jet_tokens.py runs/ntp_e --reference data/topqcd80k \\
        --conditions QCD:600:60,QCD:600:125,Tbqq:600:160,Tbqq:600:190
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
from jetfm.evaluate.decoding import decode_to_jets, resolve_preprocessing, tokenize_and_decode
from jetfm.evaluate.generative import jet_sample_from_batch
from jetfm.evaluate.sampling import load_ntp, resolve_ntp_checkpoint
from jetfm.models.sampler import SamplingConfig, seeded_generator

QUANTILES = [0.1, 0.25, 0.5, 0.75, 0.9]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--reference", required=True, help="the store the model was trained on")
    ap.add_argument("--jets", type=int, default=2000)
    ap.add_argument("--conditions", default="", help="CLASS:PT:MASS,... (GeV)")
    ap.add_argument("--jets-per-condition", type=int, default=1000)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--consistent", action="store_true", help="consistent sampling")
    ap.add_argument("--max-redraws", type=int, default=10)
    ap.add_argument("--bin-tolerance", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    task = load_ntp(resolve_ntp_checkpoint(args.checkpoint), torch.device("cpu"))
    names = list(task.config.jet_tokens)
    if not names:
        raise SystemExit(f"{args.checkpoint}: the model has no jet tokens (task.jet_tokens)")
    pre = resolve_preprocessing(task.tokenizer, None)
    edges = task.jet_edges.numpy()  # (J, bins - 1)
    store = Store(args.reference)
    classes = store.classes
    cfg = SamplingConfig(max_length=args.max_length)

    def draw(n: int, label: int, seed: int, bins: torch.Tensor | None = None):
        labels = torch.full((n,), label) if label >= 0 else torch.arange(n) % len(classes)
        toks = task.sample_tokens(
            n,
            cfg,
            labels=labels,
            generator=seeded_generator(seed),
            jet_bins=bins,
            consistent=args.consistent,
            max_redraws=args.max_redraws,
            bin_tolerance=args.bin_tolerance,
        )
        scale = None if toks.pt_scale is None else toks.pt_scale.numpy()
        jets = decode_to_jets(
            toks.ids, toks.mask, task.tokenizer, pre, labels=labels.numpy(), pt_scale=scale
        )
        return toks, jet_sample_from_batch(jets)

    t0 = time.perf_counter()
    toks, js = draw(args.jets, -1, args.seed)
    took = time.perf_counter() - t0
    how = "plain"
    if args.consistent:
        how = f"consistent, max_redraws {args.max_redraws}, bin_tolerance {args.bin_tolerance}"
    print(f"{args.jets} jets ({how}), classes alternating: drawn bin vs the generated jet's bin")
    print(f"  {args.jets / took:.1f} jets/s (sampling + decoding)")
    if toks.draws is not None and toks.consistent is not None:
        d = toks.draws.numpy()
        print(
            f"  draws per jet: mean {d.mean():.2f}, median {np.median(d):.0f}, 90% {np.quantile(d, 0.9):.0f};"
            f" {int((~toks.consistent).sum())} jets kept outside their bins"
        )
    for j, name in enumerate(names):
        drawn = toks.prefix[:, j].numpy()
        value = js.jets[name]
        got = np.searchsorted(edges[j], value, side="left")
        d = got - drawn
        rho = spearmanr(drawn, value).statistic  # average ranks for ties
        print(
            f"  {name}: Spearman {rho:.3f}; same bin {np.mean(d == 0):.2f}, within 1 "
            f"{np.mean(abs(d) <= 1):.2f}, within 3 {np.mean(abs(d) <= 3):.2f}, "
            f"median shift {np.median(d):+.0f}"
        )
    if not args.conditions:
        return
    if names[:2] != ["pt", "mass"]:
        raise SystemExit("--conditions needs jet_tokens starting with [pt, mass]")
    ref = store.read("test")
    rs = jet_sample_from_batch(ref.truncate(args.max_length))
    # the bins of the simulated jets, by the definition the model was trained with
    td = tokenize_and_decode(ref, task.tokenizer, pre, max_particles=args.max_length).jets
    ref_bins = [np.searchsorted(edges[j], td[name], side="left") for j, name in enumerate(names)]
    for k, spec in enumerate(args.conditions.split(",")):
        cls, pt, mass = spec.split(":")
        pt_v, mass_v = float(pt), float(mass)
        label = classes.index(cls)
        bins = task.condition_bins({"pt": pt_v, "mass": mass_v})
        _, cj = draw(
            args.jets_per_condition,
            label,
            args.seed + 1 + k,
            bins.expand(args.jets_per_condition, -1),
        )
        sel = (ref.jets["label"] == label) & (ref_bins[0] == int(bins[0]))
        sel &= ref_bins[1] == int(bins[1])
        lo, hi = _bin_range(edges[1], int(bins[1]))
        lo_p, hi_p = _bin_range(edges[0], int(bins[0]))
        q = np.round(np.quantile(cj.jets["mass"], QUANTILES), 1)
        qp = np.round(np.quantile(cj.jets["pt"], QUANTILES)).astype(int)
        print(
            f"{cls}, pT bin {lo_p:.0f}-{hi_p:.0f} GeV, mass bin {lo:.1f}-{hi:.1f} GeV"
            f" (quantiles {QUANTILES})"
        )
        print(f"  generated ({len(cj.jets['mass'])}): mass {q} pT {qp}")
        if sel.sum() >= 5:
            qs = np.round(np.quantile(rs.jets["mass"][sel], QUANTILES), 1)
            qsp = np.round(np.quantile(rs.jets["pt"][sel], QUANTILES)).astype(int)
            print(f"  simulated ({int(sel.sum())}, same bins): mass {qs} pT {qsp}")
        else:
            print(f"  simulated: {int(sel.sum())} test jets in those bins")


def _bin_range(edges: np.ndarray, b: int) -> tuple[float, float]:
    """(low, high] of bin ``b`` of quantile ``edges`` (open-ended at both ends)."""
    lo = edges[b - 1] if b > 0 else -np.inf
    hi = edges[b] if b < len(edges) else np.inf
    return float(lo), float(hi)


if __name__ == "__main__":
    main()
