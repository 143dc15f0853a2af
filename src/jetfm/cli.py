"""The ``jetfm`` command line: parses options into typed configs and calls library functions.

No logic lives here. Every command accepts ``--config FILE.yaml`` and repeated ``--set key=value``
overrides where it is driven by a config dataclass; a :class:`~jetfm.core.errors.JetfmError` becomes a
one-line message on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from jetfm.core.errors import JetfmError

app = typer.Typer(
    name="jetfm",
    help="Foundation models for particle-physics jets: simulate, convert, tokenize, pre-train, fine-tune, generate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def _friendly(fn: F) -> F:
    """Turn jetfm's own errors into a clean message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except JetfmError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


ConfigOpt = typer.Option(
    None, "--config", "-c", help="YAML config file.", exists=False, dir_okay=False
)
SetOpt = typer.Option(
    None, "--set", "-s", help="Override a config key: key.sub=value (repeatable)."
)


def _overrides(pairs: dict[str, Any], extra: list[str] | None) -> list[str]:
    """Command-line options that were given, as ``key=value`` overrides (applied before --set)."""
    out = []
    for k, v in pairs.items():
        if v is None:
            continue
        out.append(f"{k}={json.dumps(v) if not isinstance(v, str) else v}")
    return out + list(extra or [])


@app.command()
@_friendly
def simulate(
    config: Path | None = ConfigOpt,
    output: Path | None = typer.Option(None, "--output", "-o", help="Store folder to write."),
    classes: str | None = typer.Option(None, help="Comma-separated JetClass names, e.g. QCD,Tbqq."),
    jets_per_class: int | None = typer.Option(
        None, "--jets-per-class", "-n", help="Jets per class."
    ),
    workers: int | None = typer.Option(None, "--workers", "-j", help="Parallel Pythia processes."),
    seed: int | None = typer.Option(None, help="Base random seed (same seed -> identical jets)."),
    tune: int | None = typer.Option(
        None, help="Pythia Tune:pp number (another tune = another domain)."
    ),
    pt_min: float | None = typer.Option(None, help="Minimum jet pT [GeV]."),
    pt_max: float | None = typer.Option(None, help="Maximum jet pT [GeV]."),
    shard_size: int | None = typer.Option(None, help="Jets per shard (one work unit)."),
    set_: list[str] | None = SetOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Generate jets with Pythia 8 + FastJet (anti-kT R=0.8) into a native store, then print a physics summary.

    Resumable: rerun the same command after an interruption and finished shards are kept.
    """
    from jetfm.core.config import load_config
    from jetfm.data.simulate import SimulationConfig, format_summary, simulate, summarize

    opts = {
        "output": None if output is None else str(output),
        "classes": None
        if classes is None
        else [c.strip() for c in classes.split(",") if c.strip()],
        "jets_per_class": jets_per_class,
        "workers": workers,
        "seed": seed,
        "tune": tune,
        "pt_min": pt_min,
        "pt_max": pt_max,
        "shard_size": shard_size,
    }
    cfg = load_config(SimulationConfig, config, _overrides(opts, set_))
    root = simulate(cfg, progress=not quiet)
    typer.echo(f"store: {root}")
    typer.echo(format_summary(summarize(root)))


@app.command()
@_friendly
def convert(
    input: Path = typer.Argument(
        ...,
        help="Input file (JetClass .root, Top Tagging / JetNet .h5, QG .npz) or ParT .npy folder.",
    ),
    output: Path = typer.Argument(..., help="Store folder to create."),
    format: str | None = typer.Option(
        None, "--format", "-f", help="Input format (default: detected from content)."
    ),
    max_particles: int | None = typer.Option(
        None, help="Keep at most this many highest-pT particles per jet."
    ),
    seed: int = typer.Option(0, help="Seed of the train/val/test assignment."),
    shard_size: int = typer.Option(10000, help="Jets per shard."),
    overwrite: bool = typer.Option(False, help="Replace an existing output store."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Convert a standard dataset file into a native jetfm store (train/val/test shards + manifest)."""
    from jetfm.data.readers import convert as run_convert

    root = run_convert(
        input,
        output,
        format=format,
        max_particles=max_particles,
        seed=seed,
        shard_size=shard_size,
        overwrite=overwrite,
        progress=not quiet,
    )
    _print_store(root)


@app.command()
@_friendly
def info(store: Path = typer.Argument(..., help="A jetfm store folder.")) -> None:
    """Print a store's manifest summary and its per-class physics summary."""
    _print_store(store)


tokenizer_app = typer.Typer(
    help="Train and evaluate particle tokenizers (VQ-VAE, FSQ, k-means).", no_args_is_help=True
)
app.add_typer(tokenizer_app, name="tokenizer")


@tokenizer_app.command("train")
@_friendly
def tokenizer_train(
    store: Path = typer.Option(
        ..., "--store", help="Store to train on (its train split; val for validation)."
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Tokenizer checkpoint folder to write."
    ),
    config: Path | None = ConfigOpt,
    overrides: list[str] | None = typer.Argument(
        None, help="key.sub=value overrides, e.g. codebook_size=2048."
    ),
    max_particles: int = typer.Option(
        128, help="Particles per jet the tokenizer sees (highest pT kept)."
    ),
    max_jets: int | None = typer.Option(None, help="Use at most this many training jets."),
) -> None:
    """Train a tokenizer from a YAML recipe (configs/tokenizer*.yaml) and save it as a checkpoint folder."""
    from jetfm.core.config import load_config
    from jetfm.tokenizers.config import TokenizerConfig
    from jetfm.tokenizers.store import train_tokenizer_on_store

    cfg = load_config(TokenizerConfig, config, list(overrides or []))
    out = train_tokenizer_on_store(
        cfg, store, output, max_particles=max_particles, max_jets=max_jets
    )
    typer.echo(f"tokenizer: {out}")


@tokenizer_app.command("eval")
@_friendly
def tokenizer_eval(
    tokenizer: Path = typer.Argument(..., help="Tokenizer checkpoint folder."),
    store: Path = typer.Option(..., "--store", help="Store to evaluate on."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Folder for quality.json, quality.md and plots."
    ),
    split: str = typer.Option("test", help="Split to evaluate on."),
    max_jets: int = typer.Option(5000, help="Evaluate on at most this many jets."),
    radius: float | None = typer.Option(
        None, help="Jet radius for N-subjettiness (default: the store's)."
    ),
) -> None:
    """Tokenization quality: feature resolution, jet observables after decode, codebook use, classifier test."""
    from jetfm.evaluate.tokenizer_eval import evaluate_tokenizer_on_store

    evaluate_tokenizer_on_store(
        tokenizer, store, output, split=split, max_jets=max_jets, radius=radius
    )
    typer.echo((output / "quality.md").read_text(encoding="utf-8"))


@app.command()
@_friendly
def tokenize(
    tokenizer: Path = typer.Argument(..., help="Tokenizer checkpoint folder."),
    store: Path = typer.Argument(..., help="Store whose shards get token ids stored beside them."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Encode every jet of a store and save the token ids beside its features (reproducible)."""
    from jetfm.tokenizers.store import tokenize_store

    tag = tokenize_store(tokenizer, store, progress=not quiet)
    typer.echo(f"tokens: {store}/tokens/{tag}")


@app.command()
@_friendly
def pretrain(
    config: Path | None = ConfigOpt,
    overrides: list[str] | None = typer.Argument(
        None, help="key.sub=value overrides, e.g. train.max_steps=500."
    ),
    set_: list[str] | None = SetOpt,
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in train.output_dir exactly where it stopped."
    ),
) -> None:
    """Self-supervised pre-training (masked particle modelling or next-token prediction) on a store.

    Examples: `jetfm pretrain -c configs/mpm.yaml data.store=data/topqcd`, `jetfm pretrain -c configs/ntp.yaml --resume`.
    """
    from jetfm.train import pretrain as run_pretrain

    run_dir = run_pretrain(config, [*(overrides or []), *(set_ or [])], resume=resume)
    typer.echo(f"run: {run_dir}")


@app.command()
@_friendly
def finetune(
    config: Path | None = ConfigOpt,
    overrides: list[str] | None = typer.Argument(
        None, help="key.sub=value overrides, e.g. regime=frozen data.n_labels=1000."
    ),
    set_: list[str] | None = SetOpt,
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
) -> None:
    """Fine-tune a pre-trained backbone (or train from scratch) as a jet tagger; saves a classifier checkpoint."""
    from jetfm.core.config import load_config
    from jetfm.train.finetune import FinetuneConfig
    from jetfm.train.finetune import finetune as run_finetune

    cfg = load_config(FinetuneConfig, config, [*(overrides or []), *(set_ or [])])
    typer.echo(f"classifier: {run_finetune(cfg, overwrite=overwrite)}")


@app.command()
@_friendly
def sweep(
    config: Path | None = ConfigOpt,
    overrides: list[str] | None = typer.Argument(
        None, help="key.sub=value overrides, e.g. n_labels=[100,1000]."
    ),
    set_: list[str] | None = SetOpt,
) -> None:
    """Data-efficiency grid: labelled jets x regime (frozen/finetune/scratch) x seeds; resumable; table + plots."""
    from jetfm.core.config import load_config
    from jetfm.evaluate.sweep import SweepConfig, run_sweep

    cfg = load_config(SweepConfig, config, [*(overrides or []), *(set_ or [])])
    res = run_sweep(cfg, progress=typer.echo)
    typer.echo((res.output_dir / "summary.md").read_text(encoding="utf-8"))


@app.command()
@_friendly
def cwola(
    config: Path | None = ConfigOpt,
    overrides: list[str] | None = typer.Argument(None, help="key.sub=value overrides."),
    set_: list[str] | None = SetOpt,
) -> None:
    """Weak supervision (CWoLa): train on two mixed samples, evaluate on truth; significance improvement vs signal."""
    from jetfm.core.config import load_config
    from jetfm.evaluate.cwola_study import CwolaConfig, run_cwola

    cfg = load_config(CwolaConfig, config, [*(overrides or []), *(set_ or [])])
    run_cwola(cfg, progress=typer.echo)


@app.command()
@_friendly
def predict(
    classifier: Path = typer.Argument(
        ..., help="Classifier checkpoint (or fine-tuning run) folder."
    ),
    store: Path = typer.Argument(..., help="Store to score."),
    split: str = typer.Option("test", help="Split to score."),
    output: Path | None = typer.Option(None, "--output", "-o", help="HDF5 file to write."),
) -> None:
    """Write per-jet class scores for a store split (HDF5, with metrics when labels allow)."""
    from jetfm.evaluate.predict import predict as run_predict

    typer.echo(f"scores: {run_predict(classifier, store, split, output)}")


@app.command()
@_friendly
def export(
    classifier: Path = typer.Argument(..., help="Classifier checkpoint folder."),
    output: Path = typer.Argument(..., help="ONNX file to write."),
) -> None:
    """Export a fine-tuned tagger to ONNX (dynamic batch and particle count); checked against PyTorch."""
    from jetfm.evaluate.predict import export_classifier

    typer.echo(f"onnx: {export_classifier(classifier, output)}")


@app.command()
@_friendly
def sample(
    config: Path | None = ConfigOpt,
    overrides: list[str] | None = typer.Argument(
        None, help="key=value overrides, e.g. checkpoint=runs/ntp n_jets=1000."
    ),
    set_: list[str] | None = SetOpt,
) -> None:
    """Generate jets from a next-token checkpoint (KV-cached sampling) into a native store."""
    from jetfm.core.config import load_config
    from jetfm.evaluate.sampling import SampleConfig, sample_from_config

    cfg = load_config(SampleConfig, config, [*(overrides or []), *(set_ or [])])
    typer.echo(f"store: {sample_from_config(cfg, progress=True)}")


@app.command("evaluate-generation")
@_friendly
def evaluate_generation(
    config: Path | None = ConfigOpt,
    overrides: list[str] | None = typer.Argument(
        None, help="key=value overrides, e.g. generated=... reference=..."
    ),
    set_: list[str] | None = SetOpt,
) -> None:
    """Score a generated store against simulation: KL in quantile bins, W1M/W1P/W1EFP, FPD, KPD, with floors."""
    from jetfm.core.config import load_config
    from jetfm.evaluate.generation import GenerationEvalConfig, evaluate_generation_from_config

    cfg = load_config(GenerationEvalConfig, config, [*(overrides or []), *(set_ or [])])
    evaluate_generation_from_config(cfg)
    typer.echo((Path(cfg.out_dir) / "metrics.md").read_text(encoding="utf-8"))


@app.command()
@_friendly
def refine(
    config: Path | None = ConfigOpt,
    overrides: list[str] | None = typer.Argument(
        None, help="key=value overrides, e.g. generated=... reference=... n_jets=8000."
    ),
    set_: list[str] | None = SetOpt,
) -> None:
    """Keep generated jets with a data-vs-generated classifier's weight (rejection sampling; post-hoc)."""
    from jetfm.core.config import load_config
    from jetfm.evaluate.refine import RefineConfig, refine_from_config

    cfg = load_config(RefineConfig, config, [*(overrides or []), *(set_ or [])])
    refine_from_config(cfg, log=typer.echo)
    typer.echo(f"store: {cfg.output}")


@app.command()
@_friendly
def quickstart(
    config: Path | None = ConfigOpt,
    run_dir: Path | None = typer.Option(
        None, "--run-dir", "-o", help="Folder of the run (default runs/quickstart)."
    ),
    scale: float | None = typer.Option(
        None, help="Multiply every sample size (1 = laptop, 20 = benchmark)."
    ),
    set_: list[str] | None = SetOpt,
) -> None:
    """The main job: the whole pipeline on the embedded Pythia default; rerun to resume."""
    from jetfm.core.config import load_config
    from jetfm.pipeline import QuickstartConfig, run_quickstart

    opts = {"run_dir": None if run_dir is None else str(run_dir), "scale": scale}
    cfg = load_config(QuickstartConfig, config, _overrides(opts, set_))
    run_quickstart(cfg, log=typer.echo)


@app.command()
@_friendly
def report(
    run_dir: Path = typer.Argument(
        ..., help="A quickstart run folder (finished or partly finished)."
    ),
) -> None:
    """Rebuild the static HTML report of a run folder from its stage outputs."""
    from jetfm.pipeline import build_run_report

    typer.echo(f"report: {build_run_report(run_dir)}")


def _print_store(root: Path) -> None:
    from jetfm.data.simulate import format_summary, summarize
    from jetfm.data.store import Store

    st = Store(root)
    m = st.manifest
    typer.echo(f"store: {root}  (content hash {m['content_hash'][:12]})")
    typer.echo(f"classes: {', '.join(st.classes)}")
    for split, s in m["splits"].items():
        typer.echo(f"  {split:<5} {s['n_jets']:>8d} jets in {len(s['shards'])} shards")
    typer.echo(f"particle fields: {', '.join(st.particle_fields)}")
    typer.echo(format_summary(summarize(root)))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
