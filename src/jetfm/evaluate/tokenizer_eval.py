"""``jetfm tokenizer eval``: the tokenization-quality suite on a store split, with plots and tables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from jetfm.core.atomic import write_json_atomic, write_text_atomic
from jetfm.data.loader import load_padded
from jetfm.data.store import Store
from jetfm.evaluate.plots import save_figure
from jetfm.evaluate.tokenizer_plots import (
    plot_jet_observables,
    plot_resolution,
    plot_token_frequencies,
)
from jetfm.tokenizers.base import Tokenizer
from jetfm.tokenizers.quality import evaluate_tokenizer


def store_jet_radius(store: Store, default: float = 0.8) -> float:
    """The jet radius a store was made with (simulation settings), else ``default``."""
    src = store.manifest.get("source", {})
    for key in ("jet_radius", "R"):
        if key in src:
            return float(src[key])
        if isinstance(src.get("settings"), dict) and key in src["settings"]:
            return float(src["settings"][key])
    return default


def evaluate_tokenizer_on_store(
    tokenizer_dir: str | os.PathLike[str],
    store_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    split: str = "test",
    max_jets: int | None = 5000,
    radius: float | None = None,
    classifier: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Encode + decode a split, measure what survives, write quality.json, quality.md and PNG plots."""
    tok = Tokenizer.from_pretrained(tokenizer_dir)
    tok.eval()
    pre = tok.preprocessing_object()
    store = Store(store_root)
    data = load_padded(store.root, split, pre, max_particles=pre.max_particles)
    if max_jets is not None and max_jets < len(data["x"]):
        # shards hold one class each: a seeded random subset, not the first jets in store order
        keep = torch.randperm(len(data["x"]), generator=torch.Generator().manual_seed(seed))[
            :max_jets
        ]
        data = {k: v[keep.sort().values] for k, v in data.items()}
    r = store_jet_radius(store) if radius is None else radius
    result = evaluate_tokenizer(tok, data, pre, R=r, classifier=classifier, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = dict(result.summary)
    summary["tokenizer"] = str(tokenizer_dir)
    summary["store"] = str(store.root)
    summary["split"] = split
    write_json_atomic(out / "quality.json", summary)
    write_text_atomic(out / "quality.md", result.to_markdown() + "\n")
    arrays = result.arrays
    save_figure(plot_resolution(arrays, list(pre.feature_names)), out / "resolution.png")
    if any(k.startswith("jet_orig_") for k in arrays):  # only with preprocessing + jet axes
        save_figure(plot_jet_observables(arrays), out / "jet_observables.png")
    save_figure(plot_token_frequencies(arrays["token_counts"]), out / "token_frequencies.png")
    return summary
