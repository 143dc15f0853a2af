"""``jetfm evaluate-generation``: generated jets against simulated ones, with truth floors.

Generated jets (a ``jetfm sample`` store, :mod:`jetfm.evaluate.sampling`) are compared with a
simulated reference sample with the metrics of :mod:`jetfm.evaluate.generative` (quantile-binned KL
per jet observable, W1M, W1P, W1EFP, FPD, KPD), each next to its *truth floor*: the same metric
between two independent reference samples of the same size (a second store or split, or else two
random halves of the reference). With the tokenizer at hand, tokenized-then-decoded reference jets
(:func:`~jetfm.evaluate.decoding.tokenize_and_decode`) are scored the same way: they show how close
a perfect token model could get. Jet eta/phi are not compared (generated jets sit at eta ~ 0 by
construction, see :mod:`jetfm.evaluate.decoding`). By default the jet observables of *every* sample
are computed from massless constituents (``E = |p|``), because generated jets are massless by
construction and the hadron masses alone lower a top jet's mass by ~7% (see
:func:`~jetfm.evaluate.generative.jet_sample_from_batch`).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jetfm.core.atomic import write_json_atomic
from jetfm.core.config import to_dict
from jetfm.core.errors import ConfigError, InputError
from jetfm.data.schema import JetBatch
from jetfm.data.store import Store
from jetfm.evaluate.decoding import tokenize_and_decode
from jetfm.evaluate.generative import JetSample, jet_sample_from_batch


@dataclass
class GenerationEvalConfig:
    """``jetfm evaluate-generation``: generated store vs simulated reference, with truth floors.

    ``reference2``: a second independent reference store for the floor (null: ``reference2_split``
    of the reference store, or, if that is null too, the reference split cut into two random halves).
    ``tokenizer``: tokenizer folder for the tokenized-then-decoded curve (null: the one inside the
    checkpoint recorded in the generated store's manifest, if any). ``n_jets``: jets per sample at
    most (null: as many as all three samples have).
    ``floor_pairs``: pairs of independent simulated samples behind each truth floor. One floor is a
    noisy draw (a KL in 30 bins of 8,000 jets scatters by +-26% between pairs), so with
    ``floor_pairs > 1`` the floor is the mean over the first pair and ``floor_pairs - 1`` more,
    disjoint chunks of ``n_jets`` jets of the reference store's ``floor_split`` (which needs
    ``2 (floor_pairs - 1) n_jets`` jets, and must be neither ``split`` nor ``reference2_split``).
    """

    generated: Path = Path("data/generated")
    reference: Path = Path("data/default")
    out_dir: Path = Path("runs/generation_eval")
    reference2: Path | None = None
    split: str = "test"
    reference2_split: str | None = None
    tokenizer: Path | None = None
    n_jets: int | None = None
    n_bins: int = 30  # quantile bins of the KL divergence
    num_batches: int = 5  # bootstrap batches of the W1 metrics
    seed: int = 0
    plots: bool = True
    massless: bool = True  # jet observables of every sample from massless constituents (E = |p|)
    # cut the reference jets to the sampler's max_length (highest-pT particles), as the generated and
    # tokenized jets are: a model capped at N particles is judged against what it can represent
    match_max_particles: bool = True
    floor_pairs: int = 1
    floor_split: str | None = None

    def __post_init__(self) -> None:
        self.generated, self.reference, self.out_dir = (
            Path(self.generated),
            Path(self.reference),
            Path(self.out_dir),
        )
        if self.reference2 is not None:
            self.reference2 = Path(self.reference2)
        if self.tokenizer is not None:
            self.tokenizer = Path(self.tokenizer)
        if self.n_jets is not None and self.n_jets < 4:
            raise ConfigError("n_jets >= 4 or null", field="n_jets", found=self.n_jets)
        if self.n_bins < 1 or self.num_batches < 1:
            raise ConfigError(
                "n_bins >= 1 and num_batches >= 1",
                field="n_bins",
                found=(self.n_bins, self.num_batches),
            )
        if self.floor_pairs < 1:
            raise ConfigError("an integer >= 1", field="floor_pairs", found=self.floor_pairs)
        if self.floor_pairs > 1 and self.floor_split in (None, self.split, self.reference2_split):
            raise ConfigError(
                f"a split other than '{self.split}' and the reference2 split for floor_pairs > 1",
                field="floor_split",
                found=self.floor_split,
            )


def _single_threaded_blas() -> contextlib.AbstractContextManager:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _frame_free(s: JetSample) -> JetSample:
    """``s`` without the jet eta and phi: a generated jet has no absolute direction (its particles
    sit around eta = phi = 0), so those two are not compared."""
    jets = {k: v for k, v in s.jets.items() if k not in ("eta", "phi")}
    return JetSample(jets, s.particles, s.mask, s.particle_names)


def _shuffled(batch: JetBatch, seed: int) -> JetBatch:
    return batch.select(np.random.default_rng(seed).permutation(batch.n_jets))


def _find_tokenizer(cfg: GenerationEvalConfig, generated: Store) -> Any:
    from jetfm.tokenizers import load_tokenizer

    path = cfg.tokenizer
    if path is None:
        rec = generated.manifest.get("source", {}).get("tokenizer")
        path = Path(rec) if rec else None
    if path is None or not (Path(path) / "model.safetensors").is_file():
        return None
    return load_tokenizer(path)


def _rows_table(rows: list[dict[str, Any]], title: str) -> list[str]:
    """A markdown table of :func:`~jetfm.evaluate.generative.compare_with_floor` rows; with floors
    from several pairs, the first pair's floor and ratio stay in the table next to the mean's."""
    pairs = max((len(r.get("floor_values") or [0]) for r in rows), default=1)
    head = "| metric | value | error | truth floor | floor error | value / floor |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if pairs > 1:
        head += " first-pair floor | value / first-pair floor |"
        rule += "---:|---:|"
    out = [f"**{title}**", "", head, rule]
    notes = []

    def fmt(x: float) -> str:
        return f"{x:.3g}" if math.isfinite(x) else "n/a"

    for r in rows:
        ratio = fmt(r["ratio"])
        if not math.isfinite(r["ratio"]):
            notes.append(
                f"{r['metric']}: no ratio (an estimate that scatters around zero between identical"
                f" samples; floor {r['floor']:.2g} +- {r['floor_error']:.2g}); the value is"
                f" {abs(r['value']) / max(r['error'], 1e-300):.2g} errors from zero."
            )
        line = (
            f"| {r['metric']} | {r['value']:.4g} | {r['error']:.2g} | {r['floor']:.4g} | "
            f"{r['floor_error']:.2g} | {ratio} |"
        )
        if pairs > 1:
            f1 = r["floor_values"][0]
            line += f" {f1:.4g} | {fmt(r['value'] / f1 if f1 > 0 else math.nan)} |"
        out.append(line)
    return [*out, "", *[f"- {n}" for n in notes], *([""] if notes else [])]


def _plot_all(samples: dict[str, Any], out_dir: Path, ref_name: str) -> list[Path]:
    from jetfm.evaluate.plots import hist_with_ratio, save_figure

    paths = []
    labels = {
        "mass": "jet mass [GeV]",
        "pt": r"jet $p_T$ [GeV]",
        "n_particles": "constituents",
        "tau21": r"$\tau_{21}$",
        "tau32": r"$\tau_{32}$",
    }
    for obs, xlabel in labels.items():
        data = {k: s.jets[obs] for k, s in samples.items()}
        lo, hi = np.quantile(data[ref_name], [0.001, 0.999])
        if obs == "n_particles":
            bins = np.arange(math.floor(lo) - 0.5, math.ceil(hi) + 1.5, max(1, int(hi - lo) // 40))
        else:
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 41)
        fig = hist_with_ratio(data, bins, xlabel, reference=ref_name)
        paths.append(save_figure(fig, out_dir / f"jet_{obs}.png"))
    plabels = {
        "deta": r"particle $\Delta\eta$",
        "dphi": r"particle $\Delta\phi$",
        "pt_rel": r"particle $\log(p_T / p_T^{jet})$",
    }
    for name, xlabel in plabels.items():
        data = {}
        for k, s in samples.items():
            v = s.feature(name)[np.asarray(s.mask, bool)]
            data[k] = np.log(np.maximum(v, 1e-12)) if name == "pt_rel" else v
        lo, hi = np.quantile(data[ref_name], [0.001, 0.999])
        hi = hi if hi > lo else lo + 1.0
        fig = hist_with_ratio(data, np.linspace(lo, hi, 41), xlabel, reference=ref_name, logy=True)
        paths.append(save_figure(fig, out_dir / f"particle_{name}.png"))
    return paths


def evaluate_generation(
    generated_store: str | os.PathLike[str],
    reference_store: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str],
    reference2_store: str | os.PathLike[str] | None = None,
    tokenizer: str | os.PathLike[str] | Any | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Score generated jets against simulated ones, each metric next to its truth floor.

    Writes ``metrics.json``, ``metrics.md`` and (``plots``) PNG histograms with ratio panels to
    ``out_dir``; returns the summary dict (``generated``: rows of
    :func:`~jetfm.evaluate.generative.compare_with_floor`; ``tokenized``: the same for
    tokenized-then-decoded reference jets, or None without a tokenizer). All samples are shuffled
    (seeded) and cut to the same number of jets. ``tokenizer``: a folder or a loaded tokenizer;
    ``settings``: the other fields of :class:`GenerationEvalConfig` (an unknown one is a TypeError).
    """
    is_path = isinstance(tokenizer, str | os.PathLike)
    cfg = GenerationEvalConfig(
        generated=Path(generated_store),
        reference=Path(reference_store),
        out_dir=Path(out_dir),
        reference2=None if reference2_store is None else Path(reference2_store),
        tokenizer=Path(tokenizer) if is_path else None,
        **settings,
    )
    return evaluate_generation_from_config(cfg, tokenizer=None if is_path else tokenizer)


def evaluate_generation_from_config(
    cfg: GenerationEvalConfig, *, tokenizer: Any | None = None
) -> dict[str, Any]:
    """:func:`evaluate_generation` with a :class:`GenerationEvalConfig` (``tokenizer``: an object)."""
    from jetfm.evaluate.generative import compare_with_floor, default_metrics, truth_floors

    gen_store = Store(cfg.generated)
    ref_store = Store(cfg.reference)
    radius = float(gen_store.manifest.get("source", {}).get("jet_radius", 0.8) or 0.8)
    gen = _shuffled(gen_store.read(), cfg.seed)
    ref_all = _shuffled(ref_store.read(cfg.split), cfg.seed + 1)
    if cfg.reference2 is not None:
        ref2_store = Store(cfg.reference2)
        ref2 = _shuffled(ref2_store.read(cfg.reference2_split or cfg.split), cfg.seed + 2)
        ref, floor_source = ref_all, f"store {cfg.reference2}"
    elif cfg.reference2_split is not None:
        if cfg.reference2_split == cfg.split:
            raise ConfigError(
                f"a split other than '{cfg.split}'",
                field="reference2_split",
                found=cfg.reference2_split,
            )
        ref2 = _shuffled(ref_store.read(cfg.reference2_split), cfg.seed + 2)
        ref, floor_source = ref_all, f"split '{cfg.reference2_split}' of {cfg.reference}"
    else:
        half = ref_all.n_jets // 2
        ref = ref_all.select(np.arange(half))
        ref2 = ref_all.select(np.arange(half, 2 * half))
        floor_source = f"the other random half of split '{cfg.split}' of {cfg.reference}"
    n = min(gen.n_jets, ref.n_jets, ref2.n_jets)
    if cfg.n_jets is not None:
        n = min(n, cfg.n_jets)
    if n < 4:
        raise InputError(
            "at least 4 jets in each sample",
            field="n_jets",
            found=(gen.n_jets, ref.n_jets, ref2.n_jets),
        )
    gen, ref, ref2 = (b.select(np.arange(n)) for b in (gen, ref, ref2))
    max_len = gen_store.manifest.get("source", {}).get("sampling", {}).get("max_length")
    if cfg.match_max_particles and max_len is not None:
        ref, ref2 = ref.truncate(int(max_len)), ref2.truncate(int(max_len))
    kw = {"R": radius, "massless": cfg.massless}
    s_gen, s_ref, s_ref2 = (_frame_free(jet_sample_from_batch(b, **kw)) for b in (gen, ref, ref2))
    extra: list[tuple[JetSample, JetSample]] = []
    if cfg.floor_pairs > 1:
        assert cfg.floor_split is not None  # checked by the config
        pool = _shuffled(ref_store.read(cfg.floor_split), cfg.seed + 3)
        need = 2 * (cfg.floor_pairs - 1) * n
        if pool.n_jets < need:
            raise InputError(
                f"at least {need} jets for {cfg.floor_pairs - 1} more floor pairs of {n} jets",
                file=ref_store.root,
                field="floor_split",
                found=f"{pool.n_jets} in split '{cfg.floor_split}'",
            )
        pool = pool.select(np.arange(need))
        if cfg.match_max_particles and max_len is not None:
            pool = pool.truncate(int(max_len))
        chunks = [
            _frame_free(jet_sample_from_batch(pool.select(np.arange(i * n, (i + 1) * n)), **kw))
            for i in range(2 * (cfg.floor_pairs - 1))
        ]
        extra = list(zip(chunks[::2], chunks[1::2], strict=True))
        floor_source += (
            f", and {cfg.floor_pairs - 1} more pairs from split '{cfg.floor_split}'"
            f" (floor: the mean of {cfg.floor_pairs} pairs; floor error: its standard error)"
        )
    metrics = default_metrics(s_ref, n_bins=cfg.n_bins, num_batches=cfg.num_batches, seed=cfg.seed)
    tok = tokenizer if tokenizer is not None else _find_tokenizer(cfg, gen_store)
    tok_rows = None
    samples = {"simulated": s_ref, "generated": s_gen}
    # FPD/KPD do thousands of tiny (36 x 36) linear-algebra calls: a multi-threaded BLAS spends
    # far longer synchronising its threads than computing (60x slower measured on a busy 2-core box)
    with _single_threaded_blas():
        # the floors do not depend on the candidate: computed once for generated and tokenized
        floors = truth_floors(s_ref, s_ref2, metrics, n, extra_pairs=extra)
        rows = compare_with_floor(s_gen, s_ref, s_ref2, metrics, floors=floors)
        if tok is not None:
            # cut like the generated jets (the sampler's max_length), else like the tokenizer's data
            dec = tokenize_and_decode(ref2, tok, max_particles=max_len, jet_radius=radius)
            s_tok = _frame_free(jet_sample_from_batch(dec, **kw))
            tok_rows = compare_with_floor(s_tok, s_ref, s_ref2, metrics, floors=floors)
            samples["tokenized"] = s_tok
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "n_jets": int(n),
        "generated_store": str(cfg.generated),
        "reference_store": str(cfg.reference),
        "split": cfg.split,
        "truth_floor_from": floor_source,
        "massless": cfg.massless,
        "reference_cut_to_max_particles": max_len if cfg.match_max_particles else None,
        "generated": rows,
        "tokenized": tok_rows,
        "settings": to_dict(cfg),
    }
    plot_paths = _plot_all(samples, out, "simulated") if cfg.plots else []
    summary["plots"] = [str(p) for p in plot_paths]
    write_json_atomic(out / "metrics.json", summary)
    md = [
        f"### Generated jets vs simulation ({n} jets each; floor: {floor_source}"
        + (
            f"; reference jets cut to their {max_len} leading particles"
            if cfg.match_max_particles and max_len
            else ""
        )
        + ")",
        "",
        *_rows_table(rows, "generated vs simulated"),
    ]
    if tok_rows is not None:
        md += _rows_table(tok_rows, "tokenized-then-decoded vs simulated (the tokenizer's limit)")
    (out / "metrics.md").write_text("\n".join(md), encoding="utf-8")
    return summary
