"""Jet cores of a next-token model: does it place the leading particles next to each other?

In simulated jets the hardest particles sit very close together (half of the second-hardest
particles lie within dR < 0.01 of the hardest: often the two photons of one pi0), which sets
N-subjettiness and the jet's radial profile. This script measures that in two ways:

1. **teacher-forced**: on ``--jets`` validation jets (the loader's order, tokenized), the
   probability the model gives the k-th particle token to lie within ``r`` of the first particle
   (decoded cell centres), next to the fraction of real k-th particles that do;
2. **generated** (with ``--generated``, a store from ``jetfm sample``): the pT fractions of the
   three hardest particles, their pairwise dR and the pT-weighted radius around the pT-weighted
   centre, quantiles 25/50/75% next to simulated test jets cut to the same ``--max-length``.

    python benchmarks/generation_cores.py runs/ntp_e --reference data/topqcd80k \\
        --generated data/gen_e
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from jetfm.data.features import Preprocessing
from jetfm.data.loader import LoaderConfig, make_dataloader
from jetfm.data.schema import JetBatch
from jetfm.data.store import Store
from jetfm.evaluate.sampling import load_ntp, resolve_ntp_checkpoint
from jetfm.physics.kinematics import wrap_phi

RADII = (0.02, 0.05)
POSITIONS = (2, 3, 10)


def teacher_forced(run: Path, reference: str, n_jets: int, max_length: int) -> None:
    task = load_ntp(resolve_ntp_checkpoint(run), torch.device("cpu")).eval()
    if task.residual_head is not None:
        sys.exit(f"{run}: a factorised head; the teacher-forced check reads one flat softmax")
    pre = Preprocessing.load(run / "preprocessing.json")
    cfg = LoaderConfig(batch_size=n_jets, max_particles=max_length, shuffle=True, bucketing=False)
    batch = next(iter(make_dataloader(reference, "val", pre, cfg)))
    tok = task.tokenizer
    names, tp = list(tok.feature_names), tok.preprocessing
    K, J = task.codebook_size, task.n_jet_tokens
    codes = torch.arange(K)[:, None]
    with torch.no_grad():
        dec = tok.decode(codes, torch.ones_like(codes, dtype=torch.bool))[:, 0].double().numpy()
    centre = dec * np.asarray(tp["std"]) + np.asarray(tp["mean"])  # (K, F) physical
    eta, phi = centre[:, names.index("deta")], centre[:, names.index("dphi")]
    with torch.no_grad():
        seq = task.build_sequences(batch["x"], batch["mask"])
        h = task._embed(seq["inputs"], seq.get("x_in"), batch["label"], 0)
        hid = task.backbone.encode(h, seq["input_mask"])  # (B, L, D)
        prior = None  # the neighbour prior's log-prior over the codes (B, L - J, K), if any
        if task.neighbour is not None:
            prior = task.neighbour_log_prior(hid[:, J:], seq["inputs"])  # particle positions
    ids = seq["inputs"][:, J + 1 :].numpy()  # (B, N) particle tokens (STOP/pad beyond)
    real = seq["input_mask"][:, J + 1 :].numpy() & (ids < K)
    first = ids[:, 0]
    dist = np.hypot(eta[None] - eta[first][:, None], phi[None] - phi[first][:, None])  # (B, K)
    print(f"teacher-forced, {len(first)} validation jets: P(particle k within r of particle 1)")
    print("| k | r | model | data |")
    print("|---:|---:|---:|---:|")
    for k in POSITIONS:
        ok = real[:, k - 1]
        with torch.no_grad():
            logits = task.head(hid[:, J + k - 1]).float()  # predicts particle k
            if prior is not None:
                logits[:, :K] += prior[:, k - 1]
            if J:
                logits = logits + task.vocab_mask[J]
            p = logits.softmax(-1)[:, :K].numpy()
        d_true = dist[np.arange(len(first)), np.where(ok, ids[:, k - 1], 0)]
        for r in RADII:
            model = float((p * (dist < r)).sum(1)[ok].mean())
            data = float(np.mean(d_true[ok] < r))
            print(f"| {k} | {r} | {model:.2f} | {data:.2f} |")


def core_geometry(b: JetBatch) -> dict[str, np.ndarray]:
    """Per jet with >= 3 particles: pT fractions z1..z3 of the three hardest, their pairwise dR,
    and the pT-weighted mean distance of all particles from the pT-weighted centre."""
    counts = b.counts()
    keep = np.flatnonzero(counts >= 3)
    n_max = int(counts.max())
    B = len(counts)
    pt = np.zeros((B, n_max))
    eta, phi = np.zeros_like(pt), np.zeros_like(pt)
    mask = np.arange(n_max)[None] < counts[:, None]
    pt[mask], eta[mask], phi[mask] = b.particles["pt"], b.particles["eta"], b.particles["phi"]
    order = np.argsort(-pt, axis=1)
    pt, eta, phi = (np.take_along_axis(a, order, 1) for a in (pt, eta, phi))
    pt, eta, phi = pt[keep], eta[keep], phi[keep]
    phi = phi[:, :1] + wrap_phi(phi - phi[:, :1])  # unwrap around the hardest particle
    tot = pt.sum(1)
    ce, cp = (pt * eta).sum(1) / tot, (pt * phi).sum(1) / tot

    def dr(i: int, j: int) -> np.ndarray:
        return np.hypot(eta[:, i] - eta[:, j], phi[:, i] - phi[:, j])

    radius = (pt * np.hypot(eta - ce[:, None], phi - cp[:, None])).sum(1) / tot
    return {
        "z1": pt[:, 0] / tot,
        "z2": pt[:, 1] / tot,
        "z3": pt[:, 2] / tot,
        "dR12": dr(0, 1),
        "dR13": dr(0, 2),
        "dR23": dr(1, 2),
        "pT-weighted radius": radius,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="NTP run folder")
    ap.add_argument("--reference", required=True, help="the store the model was trained on")
    ap.add_argument("--generated", help="a store written by jetfm sample from this model")
    ap.add_argument("--jets", type=int, default=512, help="validation jets, teacher-forced")
    ap.add_argument("--max-length", type=int, default=64)
    args = ap.parse_args()
    torch.manual_seed(0)
    teacher_forced(args.checkpoint, args.reference, args.jets, args.max_length)
    if not args.generated:
        return
    sim = core_geometry(Store(args.reference).read("test").truncate(args.max_length))
    gen = core_geometry(Store(args.generated).read("test"))
    print("\ngenerated vs simulated test jets: quantiles 25 / 50 / 75%")
    print("| quantity | simulated | generated |")
    print("|---|---|---|")
    for k in sim:
        s = " / ".join(f"{v:.3f}" for v in np.quantile(sim[k], [0.25, 0.5, 0.75]))
        g = " / ".join(f"{v:.3f}" for v in np.quantile(gen[k], [0.25, 0.5, 0.75]))
        print(f"| {k} | {s} | {g} |")


if __name__ == "__main__":
    main()
