"""The quickstart pipeline: resumable stages from simulation to the report.

Sits between the CLI and the library (it imports from every layer; nothing imports it). Stages::

    data -> tokenizer -> mpm, ntp -> sweep_mpm, sweep_ntp, generation -> report

Each stage writes into its own folder of the run directory and, when it finishes, a ``stage.json``
with the hash of its own settings and of the stages it depends on. A rerun skips a stage whose hash
is unchanged; a changed setting reruns that stage and everything downstream of it. A stage that was
interrupted resumes where its library function can (simulation shards, training checkpoints, sweep
cells) and restarts otherwise.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jetfm.core.atomic import write_json_atomic, write_text_atomic
from jetfm.core.config import from_dict, save_config, to_dict
from jetfm.core.errors import ConfigError
from jetfm.data.simulate import SimulationConfig, format_summary, simulate, summarize
from jetfm.data.store import Store
from jetfm.tokenizers.config import TokenizerConfig, TokenizerTrainConfig

Log = Callable[[str], None]
DEFAULT_CLASSES = ["QCD", "Hbb", "Wqq", "Zqq", "Tbqq"]


def _default_sim() -> SimulationConfig:
    return SimulationConfig(
        classes=list(DEFAULT_CLASSES), jets_per_class=800, workers=2, shard_size=200, seed=1
    )


def _default_tokenizer() -> TokenizerConfig:
    return TokenizerConfig(
        type="vqvae_particle",
        codebook_size=512,
        latent_dim=16,
        train=TokenizerTrainConfig(steps=400, batch_size=128, val_jets=500, warmup_steps=40),
    )


@dataclass
class QuickstartConfig:
    """The whole pipeline. ``scale`` multiplies jets per class, training steps and sample sizes
    (1: about five minutes on 2 CPU cores; 20: the benchmark recipe of BENCHMARKS.md, about 40
    minutes)."""

    run_dir: Path = Path("runs/quickstart")
    scale: float = 1.0
    simulation: SimulationConfig = field(default_factory=_default_sim)
    tokenizer: TokenizerConfig = field(default_factory=_default_tokenizer)
    max_particles: int = 64
    batch_size: int = 64
    dim: int = 64
    depth: int = 2
    heads: int = 4
    pretrain_steps: int = 400
    lr: float = 1.0e-3
    sweep_classes: list[str] = field(default_factory=lambda: ["QCD", "Tbqq"])
    sweep_labels: list[int] = field(default_factory=lambda: [100, 1000, 10_000, 100_000])
    sweep_regimes: list[str] = field(default_factory=lambda: ["frozen", "finetune", "scratch"])
    sweep_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    sweep_epochs: float = 10.0
    sweep_max_steps: int = 300
    sample_jets: int = 400
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ConfigError("a positive number", field="scale", found=self.scale)
        for name in ("max_particles", "batch_size", "dim", "depth", "heads", "pretrain_steps"):
            if getattr(self, name) < 1:
                raise ConfigError("a positive integer", field=name, found=getattr(self, name))
        if self.dim % self.heads:
            raise ConfigError(f"dim divisible by heads ({self.heads})", field="dim", found=self.dim)
        missing = [c for c in self.sweep_classes if c not in self.simulation.classes]
        if missing:
            raise ConfigError(
                f"sweep classes among simulation.classes {self.simulation.classes}",
                field="sweep_classes",
                found=missing,
            )


@dataclass
class Stage:
    name: str
    depends: tuple[str, ...]
    settings: Callable[[QuickstartConfig], Any]
    run: Callable[[QuickstartConfig, Path, Path, Log], dict[str, Any]]  # (cfg, run_dir, out, log)


def _n(cfg: QuickstartConfig, value: float, minimum: int = 1) -> int:
    return max(minimum, round(value * cfg.scale))


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---- stage: data ----------------------------------------------------------------------------


def _sim_cfg(cfg: QuickstartConfig) -> SimulationConfig:
    return dataclasses.replace(
        cfg.simulation, jets_per_class=_n(cfg, cfg.simulation.jets_per_class, 10)
    )


def _run_data(cfg: QuickstartConfig, run_dir: Path, out: Path, log: Log) -> dict[str, Any]:
    sim = dataclasses.replace(_sim_cfg(cfg), output=out / "store")
    root = simulate(sim, progress=True)
    summary = summarize(root)
    log(format_summary(summary))
    return {"store": str(root), "summary": summary}


def _store(run_dir: Path) -> Path:
    return run_dir / "data" / "store"


# ---- stage: tokenizer -----------------------------------------------------------------------


def _tok_cfg(cfg: QuickstartConfig) -> TokenizerConfig:
    t = cfg.tokenizer
    return dataclasses.replace(
        t, train=dataclasses.replace(t.train, steps=_n(cfg, t.train.steps, 10))
    )


def _run_tokenizer(cfg: QuickstartConfig, run_dir: Path, out: Path, log: Log) -> dict[str, Any]:
    from jetfm.evaluate.tokenizer_eval import evaluate_tokenizer_on_store
    from jetfm.tokenizers.store import train_tokenizer_on_store

    tok = train_tokenizer_on_store(
        _tok_cfg(cfg), _store(run_dir), out / "tokenizer", max_particles=cfg.max_particles
    )
    quality = evaluate_tokenizer_on_store(
        tok, _store(run_dir), out / "quality", max_jets=_n(cfg, 1000)
    )
    log(f"tokenizer: {quality['codebook']['used_fraction']:.0%} of codes used, "
        f"classifier AUC ratio {quality['classifier']['auc_ratio']:.3f}")  # fmt: skip
    return {"tokenizer": str(tok), "quality": str(out / "quality" / "quality.json")}


def _tokenizer_dir(run_dir: Path) -> Path:
    return run_dir / "tokenizer" / "tokenizer"


# ---- stages: mpm, ntp (pre-training) --------------------------------------------------------


def _pretrain_dict(
    cfg: QuickstartConfig, run_dir: Path, out: Path, task: dict[str, Any]
) -> dict[str, Any]:
    steps = _n(cfg, cfg.pretrain_steps, 20)
    return {
        "data": {"store": str(_store(run_dir)), "feature_set": "kin3"},
        "loader": {
            "batch_size": cfg.batch_size,
            "max_particles": cfg.max_particles,
            "bucketing": True,
        },
        "task": task,
        "train": {
            "output_dir": str(out / "run"),
            "max_steps": steps,
            "optimizer": {"lr": cfg.lr, "weight_decay": 0.01},
            "schedule": {"name": "cosine", "warmup_steps": max(1, steps // 20)},
            "log_every": max(1, steps // 40),
            "checkpoint_every": max(1, steps // 4),
            "val_every": max(1, steps // 8),
            "val_batches": 4,
        },
    }


def _backbone(cfg: QuickstartConfig, **extra: Any) -> dict[str, Any]:
    return {"dim": cfg.dim, "depth": cfg.depth, "heads": cfg.heads, "n_features": 3, **extra}


def _mpm_task(cfg: QuickstartConfig, run_dir: Path) -> dict[str, Any]:
    return {
        "name": "mpm",
        "target": "token",
        "tokenizer": str(_tokenizer_dir(run_dir)),
        "mask_fraction": 0.4,
        "backbone": _backbone(cfg, input="features"),
    }


def _ntp_task(cfg: QuickstartConfig, run_dir: Path) -> dict[str, Any]:
    return {
        "name": "ntp",
        "tokenizer": str(_tokenizer_dir(run_dir)),
        "n_classes": len(cfg.simulation.classes),
        "backbone": _backbone(cfg, input="tokens", causal=True),
    }


def _pretrain_stage(
    task_fn: Callable[[QuickstartConfig, Path], dict[str, Any]],
) -> Callable[..., dict[str, Any]]:
    def run(cfg: QuickstartConfig, run_dir: Path, out: Path, log: Log) -> dict[str, Any]:
        from jetfm.train import pretrain

        out.mkdir(parents=True, exist_ok=True)
        path = out / "pretrain.yaml"
        write_text_atomic(
            path,
            yaml.safe_dump(
                _pretrain_dict(cfg, run_dir, out, task_fn(cfg, run_dir)), sort_keys=False
            ),
        )
        resume = (out / "run" / "checkpoints" / "last.json").is_file()
        run_path = pretrain(path, [], resume=resume)
        return {"run": str(run_path), "curves": _loss_curves(run_path)}

    return run


def _loss_curves(run: Path) -> dict[str, list[list[float]]]:
    """(step, value) pairs of train/loss and val/loss from the CSV logger."""
    curves: dict[str, list[list[float]]] = {}
    for f in sorted(Path(run).glob("logs/**/metrics.csv")):
        with open(f, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                for key in ("train/loss", "val/loss"):
                    if row.get(key):
                        curves.setdefault(key, []).append([float(row["step"]), float(row[key])])
    return curves


# ---- stages: fine-tuning sweeps -------------------------------------------------------------


def _sweep_labels(cfg: QuickstartConfig) -> list[int]:
    per_class = _sim_cfg(cfg).jets_per_class * cfg.simulation.train_fraction
    avail = int(per_class * len(cfg.sweep_classes))
    labels = [n for n in cfg.sweep_labels if n <= avail - len(cfg.sweep_classes)]
    return labels or [max(len(cfg.sweep_classes), avail // 2)]  # tiny runs: half of what there is


def _sweep_dict(
    cfg: QuickstartConfig, run_dir: Path, out: Path, pretrained: Path, regimes: list[str]
) -> dict[str, Any]:
    return {
        "output_dir": str(out),
        "n_labels": _sweep_labels(cfg),
        "regimes": regimes,
        "seeds": list(cfg.sweep_seeds),
        "epochs": cfg.sweep_epochs,
        "min_steps": 20,
        "finetune": {
            "pretrained": str(pretrained),
            "head": {"kind": "class_attention", "depth": 1},
            "data": {
                "store": str(_store(run_dir)),
                "classes": list(cfg.sweep_classes),
                "val_split": None,
            },
            "loader": {"batch_size": cfg.batch_size, "max_particles": cfg.max_particles},
            "train": {
                "max_steps": _n(cfg, cfg.sweep_max_steps, 20),
                "optimizer": {"lr": cfg.lr, "weight_decay": 0.01},
                "schedule": {"name": "cosine", "warmup_steps": 10},
                "val_every": 0,
                "log_every": 50,
                "progress_bar": False,
            },
        },
    }


def _sweep_stage(
    source: str, regimes_fn: Callable[[QuickstartConfig], list[str]]
) -> Callable[..., dict[str, Any]]:
    def run(cfg: QuickstartConfig, run_dir: Path, out: Path, log: Log) -> dict[str, Any]:
        from jetfm.evaluate.sweep import SweepConfig, run_sweep

        pretrained = run_dir / source / "run"
        scfg = from_dict(SweepConfig, _sweep_dict(cfg, run_dir, out, pretrained, regimes_fn(cfg)))
        res = run_sweep(scfg, progress=log)
        log((out / "summary.md").read_text(encoding="utf-8"))
        return {"summary": str(out / "summary.json"), "rows": res.rows}

    return run


# ---- stage: generation ----------------------------------------------------------------------


def _run_generation(cfg: QuickstartConfig, run_dir: Path, out: Path, log: Log) -> dict[str, Any]:
    from jetfm.evaluate.generation import evaluate_generation
    from jetfm.evaluate.sampling import sample

    n = _n(cfg, cfg.sample_jets, 10)
    t0 = time.perf_counter()
    gen = sample(
        run_dir / "ntp" / "run",
        n,
        out / "generated",
        batch_size=min(256, n),
        temperature=cfg.temperature,
        max_length=cfg.max_particles,
        seed=0,
        overwrite=True,
        progress=True,
    )
    seconds = time.perf_counter() - t0
    evaluate_generation(
        gen,
        _store(run_dir),
        out_dir=out / "eval",
        split="test",
        reference2_split="val",
        tokenizer=_tokenizer_dir(run_dir),
        n_jets=n,
    )
    log(f"generated {n} jets in {seconds:.1f} s; metrics in {out / 'eval' / 'metrics.md'}")
    return {
        "generated": str(gen),
        "metrics": str(out / "eval" / "metrics.json"),
        "sample_seconds": seconds,
        "n": n,
    }


def _run_report(cfg: QuickstartConfig, run_dir: Path, out: Path, log: Log) -> dict[str, Any]:
    path = build_run_report(run_dir)
    log(f"report: {path}")
    return {"report": str(path)}


STAGES: list[Stage] = [
    Stage("data", (), lambda c: to_dict(_sim_cfg(c)), _run_data),
    Stage(
        "tokenizer", ("data",), lambda c: [to_dict(_tok_cfg(c)), c.max_particles], _run_tokenizer
    ),
    Stage(
        "mpm",
        ("tokenizer",),
        lambda c: _pretrain_dict(c, Path(), Path(), _mpm_task(c, Path())),
        _pretrain_stage(_mpm_task),
    ),
    Stage(
        "ntp",
        ("tokenizer",),
        lambda c: _pretrain_dict(c, Path(), Path(), _ntp_task(c, Path())),
        _pretrain_stage(_ntp_task),
    ),
    Stage(
        "sweep_mpm",
        ("mpm",),
        lambda c: _sweep_dict(c, Path(), Path(), Path(), list(c.sweep_regimes)),
        _sweep_stage("mpm", lambda c: list(c.sweep_regimes)),
    ),
    Stage(
        "sweep_ntp",
        ("ntp",),
        lambda c: _sweep_dict(c, Path(), Path(), Path(), ["frozen", "finetune"]),
        _sweep_stage("ntp", lambda c: ["frozen", "finetune"]),
    ),
    Stage(
        "generation",
        ("ntp",),
        lambda c: [c.sample_jets, c.scale, c.temperature, c.max_particles],
        _run_generation,
    ),
    Stage(
        "report",
        ("data", "tokenizer", "mpm", "ntp", "sweep_mpm", "sweep_ntp", "generation"),
        lambda c: 1,
        _run_report,
    ),
]


def run_quickstart(
    cfg: QuickstartConfig, log: Log = print, *, only: list[str] | None = None
) -> dict[str, Any]:
    """Run (or resume) every stage; return each stage's result record."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    results: dict[str, Any] = {}
    hashes: dict[str, str] = {}
    t_all = time.perf_counter()
    for stage in STAGES:
        h = _hash({"settings": stage.settings(cfg), "deps": [hashes[d] for d in stage.depends]})
        hashes[stage.name] = h
        if only is not None and stage.name not in only:
            continue
        out = run_dir / stage.name
        marker, pending = out / "stage.json", out / "stage.pending.json"
        if marker.is_file():
            rec = json.loads(marker.read_text(encoding="utf-8"))
            if rec.get("hash") == h:
                log(f"[{stage.name}] up to date, skipped")
                results[stage.name] = rec["result"]
                continue
        if out.exists() and not (
            pending.is_file() and json.loads(pending.read_text())["hash"] == h
        ):
            shutil.rmtree(out)  # settings changed: start this stage afresh
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(pending, {"hash": h})
        log(f"[{stage.name}] running")
        t0 = time.perf_counter()
        result = stage.run(cfg, run_dir, out, log)
        rec = {"hash": h, "seconds": round(time.perf_counter() - t0, 1), "result": result}
        write_json_atomic(marker, rec)
        pending.unlink()
        results[stage.name] = result
        log(f"[{stage.name}] done in {rec['seconds']} s")
    log(f"quickstart finished in {time.perf_counter() - t_all:.0f} s: {run_dir / 'report.html'}")
    return results


# ---- the report -----------------------------------------------------------------------------


def _stage_result(run_dir: Path, name: str) -> dict[str, Any] | None:
    f = run_dir / name / "stage.json"
    return json.loads(f.read_text(encoding="utf-8"))["result"] if f.is_file() else None


def _rel(run_dir: Path, paths: list[Path]) -> list[str]:
    return [str(p.relative_to(run_dir)) for p in paths if p.is_file()]


def build_run_report(run_dir: str | Path) -> Path:
    """Rebuild ``report.html`` from whatever stages of a quickstart run folder have finished."""
    from jetfm.evaluate.plots import loss_curves
    from jetfm.evaluate.report import Section, Table, build_report

    run_dir = Path(run_dir)
    sections = []
    data = _stage_result(run_dir, "data")
    if data is not None:
        store = Store(data["store"])
        rows = [{"class": k, **{kk: round(v, 1) if isinstance(v, float) else v for kk, v in s.items()}}
                for k, s in data["summary"]["classes"].items()]  # fmt: skip
        splits = [
            {"split": k, "jets": v["n_jets"], "shards": len(v["shards"])}
            for k, v in store.manifest["splits"].items()
        ]
        sections.append(
            Section(
                "Dataset",
                "Pythia 8 + FastJet (anti-kT R = 0.8, 500 < pT < 1000 GeV, |eta| < 2), truth-matched signal jets. "
                "Masses and pT in GeV; the peak is the mode of 5 GeV bins.",
                tables=[
                    Table(rows, caption="per class"),
                    Table(splits, caption="splits (disjoint shards)"),
                ],
            )
        )
    tok = _stage_result(run_dir, "tokenizer")
    if tok is not None:
        q = json.loads(Path(tok["quality"]).read_text(encoding="utf-8"))
        qrows = [
            {"quantity": "codebook used", "value": f"{q['codebook']['used_fraction']:.1%} of {q['codebook']['codebook_size']}"},
            {"quantity": "perplexity", "value": f"{q['codebook']['perplexity']:.1f}"},
            {"quantity": "classifier AUC original / decoded", "value": f"{q['classifier']['auc_original']:.4f} / {q['classifier']['auc_decoded']:.4f}"},
            {"quantity": "AUC ratio", "value": f"{q['classifier']['auc_ratio']:.4f}"},
        ]  # fmt: skip
        jrows = [
            {
                "observable": k,
                **{kk: (round(v, 4) if isinstance(v, float) else v) for kk, v in s.items()},
            }
            for k, s in q["jets"].items()
        ]
        qdir = run_dir / "tokenizer" / "quality"
        sections.append(
            Section(
                "Tokenizer quality",
                "Jets encoded to tokens and decoded back; mass and pT resolutions are relative.",
                tables=[Table(qrows), Table(jrows, caption="jet observables after decode")],
                images=_rel(
                    run_dir,
                    [
                        qdir / "resolution.png",
                        qdir / "jet_observables.png",
                        qdir / "token_frequencies.png",
                    ],
                ),
            )
        )
    curves: dict[str, Any] = {}
    for name in ("mpm", "ntp"):
        r = _stage_result(run_dir, name)
        if r is not None:
            for key, pts in r["curves"].items():
                curves[f"{name.upper()} {key}"] = ([p[0] for p in pts], [p[1] for p in pts])
    if curves:
        sections.append(
            Section(
                "Pre-training",
                "Masked particle modelling (token targets, 40% of particles masked) and next-token prediction "
                "(class-conditional GPT over pT-ordered tokens).",
                figures={"pretraining_loss": loss_curves(curves)},
            )
        )
    for name, title in (
        ("sweep_mpm", "Fine-tuning: MPM backbone"),
        ("sweep_ntp", "Fine-tuning: NTP backbone"),
    ):
        r = _stage_result(run_dir, name)
        if r is None:
            continue
        d = run_dir / name
        sections.append(
            Section(
                title,
                "Top vs QCD on the fixed test split; mean ± std over seeds; rej_50 = 1/eps_B at eps_S = 0.5.",
                tables=[Table(_fmt_rows(r["rows"]))],
                images=_rel(
                    run_dir, sorted(d.glob("*_vs_labels.png")) + sorted(d.glob("roc_n*.png"))
                ),
            )
        )
    gen = _stage_result(run_dir, "generation")
    if gen is not None:
        m = json.loads(Path(gen["metrics"]).read_text(encoding="utf-8"))
        rows = []
        for r in m.get("generated", []):
            rows.append({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()})
        sections.append(
            Section(
                "Generation",
                f"{gen['n']} jets sampled from the NTP model with a key/value cache in {gen['sample_seconds']:.1f} s, "
                "decoded through the tokenizer, compared with simulation; each metric next to its truth floor "
                "(the same metric between two independent simulated samples).",
                tables=[Table(rows)],
                images=_rel(run_dir, sorted((run_dir / "generation" / "eval").glob("*.png"))),
            )
        )
    cfg_text = (
        (run_dir / "config.yaml").read_text(encoding="utf-8")
        if (run_dir / "config.yaml").is_file()
        else None
    )
    return build_report(run_dir, sections, title="jetfm quickstart", config=cfg_text)


def _fmt_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        row: dict[str, Any] = {"regime": r["regime"], "labels": r["n_labels"]}
        for k in ("accuracy", "auc", "rej_50", "rej_30"):
            if k in r:
                row[k] = f"{r[k]:.3f} ± {r.get(k + '_std', 0.0):.3f}"
        out.append(row)
    return out
