"""Issue 6's top+QCD generation benchmark, end to end, as one resumable command.

The metric table for a top+QCD model in BENCHMARKS.md ("A truth floor from five pairs") came from
a chain of runs spread over sessions 12 to 18 (run S). This script replays that chain with the
same commands, so the table can be rebuilt, or extended with a larger GPT on a GPU, without
reassembling it from the prose:

1. ``reference``: 2 x 40,000 Pythia jets (QCD, Tbqq; seed 777): train 64,000 / val 8,000 /
   test 8,000. The test split is the reference; the floor pairs come from val and train.
2. ``training``: 2 x 120,000 other Pythia jets (seed 2613), 96% train: the GPT's jets.
3. ``tokenizer``: 131,072 two-level tokens (512 k-means cells x 256 residual codes,
   ``configs/tokenizer_gen_two_level.yaml``), fitted on the reference store's training split.
4. ``q``, ``r``, ``s``: the factorised 6x192 GPT (``configs/ntp_gen_factorised.yaml``): 5,000
   steps on the reference store's training split (run Q), then 6,000 (R) and 4,000 (S) more on
   the training store, each from the previous weights (``init_from``) with a fresh schedule.
5. ``sample``: 8,000 jets with session 17's sampler (jet-token bins and classes of training jets,
   consistent sampling, T = 0.95, residual T = 0.7, class guidance 0.5 on top jets).
6. ``evaluate``: ``jetfm evaluate-generation`` against the 8,000 test jets, with the truth floor
   the mean over five independent pairs (val vs test, then four from train).

A stage that finished leaves a marker (``<workdir>/.<stage>.done``, its command) and is skipped
on a rerun, so a rerun resumes; an unfinished stage's output is removed and the stage rerun. A
stage that runs takes the markers of every later stage with it (they were built on its output).
``--scale`` multiplies the jet counts and, unless ``--step-scale`` is given, the training steps
(``--scale 0.02`` runs the whole chain in ~15 minutes on 2 cores; its numbers mean nothing);
``--model DEPTHxWIDTH`` and ``--batch-size`` change the GPT (the lever issue 6 still
needs: P 4x128 -> Q 6x192 -> R/S three times the jets each cut KL(tau32)); ``--accelerator`` and
``--device`` pick the hardware (both ``auto`` by default). Each command is printed before it
runs; the metric table is ``<workdir>/eval/metrics.md``.

    python benchmarks/generation_topqcd.py --workdir runs/topqcd_gen [--scale 1] [--step-scale 1]
        [--workers 2] [--model 6x192] [--batch-size 64] [--accelerator auto] [--device auto]
        [--stages reference,...,evaluate] [--plots]
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("reference", "training", "tokenizer", "q", "r", "s", "sample", "evaluate")
# runs Q, R and S: (store, steps, learning rate, seed) at --scale 1
TRAINING = {
    "q": ("reference", 5000, "1.0e-3", 0),
    "r": ("training", 6000, "5.0e-4", 1),
    "s": ("training", 4000, "3.0e-4", 2),
}


def jetfm() -> str:
    """The ``jetfm`` entry point of this interpreter's environment."""
    here = Path(sys.executable).parent / "jetfm"
    found = str(here) if here.exists() else shutil.which("jetfm")
    if found is None:
        sys.exit("generation_topqcd.py: no 'jetfm' command; pip install -e . first")
    return found


def run(cmd: list[str]) -> None:
    """Run a stage's command from the repository root (configs/ are read from there)."""
    print("+ " + shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


def commands(args: argparse.Namespace) -> dict[str, tuple[Path, list[str]]]:
    """Each stage's output (removed before the stage reruns) and its command."""
    w, s, exe = args.workdir.resolve(), args.scale, jetfm()
    ref, train_store, tok = w / "topqcd80k", w / "topqcd240k", w / "tok2level"
    n_eval = max(16, round(8000 * s))
    depth, dim = (int(v) for v in args.model.lower().split("x"))
    stores = {"reference": ref, "training": train_store}
    out: dict[str, tuple[Path, list[str]]] = {}
    sim = [exe, "simulate", "--classes", "QCD,Tbqq", "-j", str(args.workers), "-q"]
    out["reference"] = (ref, [*sim, "-n", str(round(40000 * s)), "--seed", "777", "-o", str(ref)])
    splits = ["-s", "train_fraction=0.96", "-s", "val_fraction=0.02", "-s", "test_fraction=0.02"]
    out["training"] = (
        train_store,
        [*sim, "-n", str(round(120000 * s)), "--seed", "2613", "-o", str(train_store), *splits],
    )
    out["tokenizer"] = (
        tok,
        [
            *(exe, "tokenizer", "train", "--store", str(ref), "-o", str(tok)),
            *("-c", "configs/tokenizer_gen_two_level.yaml", "--max-particles", "64"),
        ],
    )
    previous = None
    for name, (store, steps, lr, seed) in TRAINING.items():
        folder = w / f"ntp_{name}"
        cmd = [exe, "pretrain", "-c", "configs/ntp_gen_factorised.yaml"]
        cmd += [
            f"data.store={stores[store]}",
            f"task.tokenizer={tok}",
            f"task.backbone.dim={dim}",
            f"task.backbone.depth={depth}",
            f"task.backbone.heads={max(1, dim // 32)}",
            f"loader.batch_size={args.batch_size}",
            f"train.max_steps={max(10, round(steps * args.step_scale))}",
            f"train.output_dir={folder}",
            f"train.optimizer.lr={lr}",
            f"train.seed={seed}",
            f"train.accelerator={args.accelerator}",
            f"train.checkpoint_every={max(5, round(1000 * args.step_scale))}",
            f"train.val_every={max(5, round(1000 * args.step_scale))}",
        ]
        if previous is not None:
            cmd.append(f"init_from={previous}")
        out[name] = (folder, cmd)
        previous = folder
    generated = w / "generated"
    out["sample"] = (
        generated,
        [
            *(exe, "sample", "-c", "configs/sample.yaml", f"checkpoint={previous}"),
            *(f"n_jets={n_eval}", "max_length=64", f"output={generated}"),
            *(f"jet_condition_from={train_store}", "consistent=true", "bin_tolerance=1"),
            *("max_redraws=30", "temperature=0.95", "residual_temperature=0.7"),
            *("guidance={Tbqq: 0.5}", f"device={args.device}", "seed=0"),
        ],
    )
    out["evaluate"] = (
        w / "eval",
        [
            *(exe, "evaluate-generation", "-c", "configs/sample_eval.yaml"),
            *(f"generated={generated}", f"reference={ref}", "reference2_split=val"),
            *(f"n_jets={n_eval}", "floor_pairs=5", "floor_split=train"),
            *(f"out_dir={w / 'eval'}", f"plots={str(args.plots).lower()}"),
        ],
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("runs/topqcd_gen"))
    ap.add_argument("--scale", type=float, default=1.0, help="jets x this")
    ap.add_argument(
        "--step-scale", type=float, default=None, help="training steps x this (default: --scale)"
    )
    ap.add_argument("--workers", type=int, default=2, help="Pythia processes")
    ap.add_argument("--model", default="6x192", help="GPT depth x width (heads: width / 32)")
    ap.add_argument("--batch-size", type=int, default=64, help="jets per training step")
    ap.add_argument("--accelerator", default="auto", help="training: cpu, gpu, mps or auto")
    ap.add_argument("--device", default="auto", help="sampling: cpu, cuda, mps or auto")
    ap.add_argument("--plots", action="store_true", help="distribution plots in the evaluation")
    ap.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated, of {','.join(STAGES)}"
    )
    args = ap.parse_args()
    args.step_scale = args.scale if args.step_scale is None else args.step_scale
    if args.scale <= 0 or args.step_scale <= 0:
        ap.error("--scale and --step-scale must be > 0")
    wanted = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(wanted) - set(STAGES))
    if unknown:
        ap.error(f"unknown stages {unknown}; expected some of {list(STAGES)}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    plan = commands(args)
    for i, (stage, (output, cmd)) in enumerate(plan.items()):
        if stage not in wanted:
            continue
        done = args.workdir / f".{stage}.done"  # written only after the stage's command succeeds
        record = shlex.join(cmd) + "\n"
        if done.exists():
            if done.read_text(encoding="utf-8") != record:
                sys.exit(
                    f"generation_topqcd.py: {done} records another command for stage {stage!r} "
                    "(other settings); use another --workdir, or delete the marker to redo it"
                )
            print(f"[{stage}] done before: skipped ({output})", flush=True)
            continue
        if output.exists():  # an interrupted earlier attempt: start the stage again
            print(f"[{stage}] removing the unfinished {output}", flush=True)
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        print(f"[{stage}]", flush=True)
        for later in list(plan)[i + 1 :]:  # built on this stage's output: they must run again
            (args.workdir / f".{later}.done").unlink(missing_ok=True)
        run(cmd)
        done.write_text(record, encoding="utf-8")
    if (args.workdir / ".evaluate.done").exists():
        print(f"the metric table: {args.workdir / 'eval' / 'metrics.md'}")


if __name__ == "__main__":
    main()
