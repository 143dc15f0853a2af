"""Where does a next-token model lose the jet substructure? Complete real jets from a prefix.

Free-running samples of the 8192-token GPTs get the particle-level distributions nearly right but
N-subjettiness far off (BENCHMARKS.md: generated tau32 piles up at 0.8, where simulated jets
spread from 0.2 to 1.1). This script finds out which particles carry the error: it takes real test
jets, tokenizes them, forces the model to take their jet tokens (if any) and their first ``k``
particle tokens, and lets it draw the rest. If the completions from ``k = 10`` have the right
tau32 while those from ``k = 0`` do not, the leading particles are the problem; if even long
prefixes give the wrong shape, the soft remainder is.

The completions are compared with the same jets tokenized and decoded whole (so the tokenizer's own
error is not counted): per ``k``, the quantile-binned KL (OmniJet-alpha's metric, 30 bins) of
tau32, tau21 and mass, their medians and the fraction of jets with tau32 < 0.5. The KL floor of
half the jets is printed for scale: one half of the tokenized jets against the other.

    python benchmarks/generation_completion.py runs/ntp_gen8192 --reference data/topqcd80k \\
        [--jets 2000] [--prefix 0,1,3,10,30]
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from jetfm.data.features import Preprocessing
from jetfm.data.loader import LoaderConfig, make_dataloader
from jetfm.evaluate.decoding import decode_to_jets
from jetfm.evaluate.generative import jet_sample_from_batch, kl_quantile
from jetfm.evaluate.sampling import load_ntp, resolve_ntp_checkpoint
from jetfm.models.sampler import SamplingConfig, generate_tokens, seeded_generator

OBSERVABLES = ("tau32", "tau21", "mass")


def observables(ids: Tensor, mask: Tensor, tokenizer: object) -> dict[str, np.ndarray]:
    jets = decode_to_jets(ids, mask, tokenizer)
    s = jet_sample_from_batch(jets, with_particles=False)
    return {k: s.jets[k] for k in OBSERVABLES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="NTP run folder")
    ap.add_argument("--reference", required=True, help="the store the model was trained on")
    ap.add_argument("--split", default="test")
    ap.add_argument("--jets", type=int, default=2000)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--prefix", default="0,1,3,10,30", help="particle prefix lengths k")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    run = args.checkpoint
    task = load_ntp(resolve_ntp_checkpoint(run), torch.device("cpu")).eval()
    pre = Preprocessing.load(run / "preprocessing.json")
    cfg = LoaderConfig(
        batch_size=args.jets,
        max_particles=args.max_length,
        shuffle=True,  # stores are written class by class: a random draw mixes them
        bucketing=False,
        seed=args.seed,
    )
    batch = next(iter(make_dataloader(args.reference, args.split, pre, cfg)))
    tok, J = task.tokenizer, task.n_jet_tokens
    with torch.no_grad():
        seq = task.build_sequences(batch["x"], batch["mask"])
    inputs = seq["inputs"]  # (B, 1 + J + N): START, jet tokens, particles, STOP / padding
    n = seq["input_mask"][:, 1 + J :].sum(dim=1)  # (B,) particles per jet
    ids_real = inputs[:, 1 + J :]
    mask_real = torch.arange(ids_real.shape[1])[None] < n[:, None]
    whole = observables(ids_real, mask_real, tok)
    labels = batch["label"].numpy()
    classes = [*sorted(set(labels.tolist())), -1]  # each class, then all (-1)
    names = {c: f"class {c}" for c in classes} | {-1: "all"}
    print(
        f"{run}: {len(n)} {args.split} jets of {args.reference}, completed from their jet tokens "
        f"(J = {J}) and first k particles; temperature {args.temperature}"
    )
    print("KL(observable) against the same jets tokenized whole; medians; share of tau32 < 0.5\n")
    head = "| k | jets | " + " | ".join(f"KL {o}" for o in OBSERVABLES)
    print(head + " | median tau32 | median tau21 | tau32 < 0.5 |")
    print("|---:|---:|" + "---:|" * (len(OBSERVABLES) + 3))

    def row(label: str, count: int, obs: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
        kls = " | ".join(f"{kl_quantile(ref[o], obs[o]):.4f}" for o in OBSERVABLES)
        print(
            f"| {label} | {count} | {kls} | {np.median(obs['tau32']):.3f} | "
            f"{np.median(obs['tau21']):.3f} | {np.mean(obs['tau32'] < 0.5):.2f} |"
        )

    for k in [int(v) for v in args.prefix.split(",")]:
        sel = torch.nonzero(n >= k).squeeze(-1)
        forced = inputs[sel, 1 : 1 + J + k]  # (B', J + k)
        sampling = SamplingConfig(
            temperature=args.temperature,
            max_length=args.max_length + J,
            min_length=1 + J,
        )
        with torch.no_grad():
            out = generate_tokens(
                task.backbone,
                task.output_head(),
                task.embed_tokens,
                n_jets=len(sel),
                start_id=task.start_id,
                stop_id=task.stop_id,
                config=sampling,
                labels=batch["label"][sel],
                generator=seeded_generator(args.seed, k),
                # forces forced[:, T] at steps T < J + k (no jet stops then: each has >= k
                # particles), then the model's own bias (vocabulary mask, neighbour prior)
                logit_bias=functools.partial(task._jet_token_step_bias, forced=forced),
            )
        done = observables(out.ids[:, J:], out.mask[:, J:], tok)
        for c in classes:
            pick = (labels[sel.numpy()] == c) if c >= 0 else np.ones(len(sel), bool)
            ref = {o: whole[o][sel.numpy()][pick] for o in OBSERVABLES}
            row(f"{k}, {names[c]}", int(pick.sum()), {o: done[o][pick] for o in OBSERVABLES}, ref)
    for c in classes:
        pick = (labels == c) if c >= 0 else np.ones(len(labels), bool)
        own = {o: whole[o][pick] for o in OBSERVABLES}
        half = int(pick.sum()) // 2  # the noise scale: one half of the tokenized jets vs the other
        first = {o: v[:half] for o, v in own.items()}
        row(f"floor (halves), {names[c]}", half, {o: v[half:] for o, v in own.items()}, first)
        row(f"tokenized whole, {names[c]}", int(pick.sum()), own, own)


if __name__ == "__main__":
    main()
