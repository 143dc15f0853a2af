"""Transfer studies of issue 5 at laptop size: the three recipes in ``configs/transfer_*.yaml``, run
through the ``jetfm`` command line exactly as their headers describe, with smaller samples, fewer
steps and fewer labelled-set sizes given as command-line overrides.

1. **unseen classes** (MPM v1): pre-train on QCD + Higgs jets only, fine-tune on t / W / Z;
2. **new tune**: pre-train on the default Pythia tune (Tune:pp = 14, Monash), fine-tune and test on
   jets made with Tune:pp = 5 (4C);
3. **real quark/gluon**: fine-tune the tune-14 backbone on the shared public quark/gluon sample.

Every command is printed before it runs; a step whose output already exists is skipped, so a rerun
resumes (the sweeps themselves resume cell by cell). At the end the three ``summary.md`` tables are
printed. Nothing here is specific to the benchmark: the same commands at the recipes' own sizes are
the GPU-scale studies.

    python benchmarks/transfer.py --out runs/transfer_laptop [--jets 500] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"  # the recipes, wherever the script is started from
QG_SAMPLE = ROOT.parent / "shared" / "data" / "qg_real_sample"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/transfer_laptop"))
    ap.add_argument("--jets", type=int, default=500, help="simulated jets per class")
    ap.add_argument("--pretrain-steps", type=int, default=1000)
    ap.add_argument("--tokenizer-steps", type=int, default=400)
    ap.add_argument("--n-labels", default="100,300,1000", help="labelled-set sizes of the sweeps")
    ap.add_argument("--max-steps", type=int, default=400, help="fine-tuning steps at most")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--qg", type=Path, default=QG_SAMPLE, help="the shared quark/gluon sample")
    ap.add_argument("--studies", default="unseen,tune,qg")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    a = ap.parse_args()
    jetfm = str(Path(sys.executable).with_name("jetfm"))
    env = dict(os.environ)
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)
    out = a.out
    data = out / "data"
    sweep_common = [
        f"n_labels=[{a.n_labels}]",
        f"seeds=[{a.seeds}]",
        f"finetune.train.max_steps={a.max_steps}",
    ]

    def run(done: Path, *cmd: str, touch: bool = False) -> None:
        """Run ``jetfm *cmd`` unless ``done`` exists (``touch``: create ``done`` after success)."""
        shown = " ".join(cmd)
        if done.exists():
            print(f"[skip, {done} exists] jetfm {shown}", flush=True)
            return
        print(f"$ jetfm {shown}", flush=True)
        t0 = time.perf_counter()
        subprocess.run([jetfm, *cmd], check=True, env=env)
        print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
        if touch:
            done.write_text("finished\n")

    def simulate(name: str, classes: str, seed: int, *extra: str) -> Path:
        store = data / name
        run(
            store / "manifest.json",
            "simulate", "-o", str(store), "--classes", classes, "-n", str(a.jets),
            "-j", "1", "--seed", str(seed), "--shard-size", str(a.jets), *extra,
        )  # fmt: skip
        return store

    def pretrain(name: str, store: Path) -> Path:
        tok = out / f"tok_{name}"
        run(
            tok / "config.yaml",
            "tokenizer", "train", "-c", str(CONFIGS / "tokenizer.yaml"), "--store", str(store),
            "-o", str(tok), f"train.steps={a.tokenizer_steps}",
        )  # fmt: skip
        run_dir = out / f"mpm_{name}"
        run(
            out / f".done-mpm_{name}",
            "pretrain", "-c", str(CONFIGS / "mpm.yaml"), f"data.store={store}", "task.target=token",
            f"task.tokenizer={tok}", f"train.output_dir={run_dir}",
            f"train.max_steps={a.pretrain_steps}", "train.progress_bar=false",
            touch=True,
        )  # fmt: skip
        return run_dir

    def sweep(recipe: str, name: str, pretrained: Path, store: Path) -> Path:
        sweep_dir = out / f"sweep_{name}"
        run(
            sweep_dir / "summary.md",
            "sweep", "-c", str(CONFIGS / f"{recipe}.yaml"), f"output_dir={sweep_dir}",
            f"finetune.pretrained={pretrained}", f"finetune.data.store={store}", *sweep_common,
        )  # fmt: skip
        return sweep_dir

    studies = a.studies.split(",")
    tables: list[tuple[str, Path]] = []
    if "unseen" in studies:
        qcd_higgs = simulate("qcd_higgs", "QCD,Hbb,Hcc,Hgg,H4q,Hqql", 11)
        twz = simulate("twz", "Tbqq,Wqq,Zqq", 22)
        backbone = pretrain("qcd_higgs", qcd_higgs)
        tables.append(
            ("unseen classes: pre-trained on QCD + Higgs, tagged t/W/Z (t vs W rejections)",
             sweep("transfer_unseen_classes", "unseen", backbone, twz))
        )  # fmt: skip
    if "tune" in studies or "qg" in studies:
        tune14 = simulate("tune14", "QCD,Tbqq", 31)
        backbone14 = pretrain("tune14", tune14)
        if "tune" in studies:
            tune5 = simulate("tune5", "QCD,Tbqq", 32, "--tune", "5")
            tables.append(
                ("new tune: pre-trained on Tune:pp 14, tagged top vs QCD on Tune:pp 5",
                 sweep("transfer_new_tune", "tune5", backbone14, tune5))
            )  # fmt: skip
            tables.append(
                ("same tune (reference): pre-trained and tagged on Tune:pp 14",
                 sweep("transfer_new_tune", "tune14", backbone14, tune14))
            )  # fmt: skip
        if "qg" in studies:
            qg = data / "qg_real"
            run(qg / "manifest.json", "convert", str(a.qg), str(qg), "--quiet")
            tables.append(
                ("real quark/gluon: pre-trained on simulated top + QCD (Tune:pp 14)",
                 sweep("transfer_real_qg", "qg", backbone14, qg))
            )  # fmt: skip
    for title, sweep_dir in tables:
        print(f"\n### {title}\n")
        print((sweep_dir / "summary.md").read_text())


if __name__ == "__main__":
    main()
