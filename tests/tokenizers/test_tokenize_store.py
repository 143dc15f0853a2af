"""Store-level tokenizer flow: train on a store, write token ids beside it, evaluate — via the CLI."""

from __future__ import annotations

import json

import numpy as np
import torch
from typer.testing import CliRunner

from jetfm.cli import app
from jetfm.data.loader import LoaderConfig, make_dataloader
from jetfm.tokenizers.base import Tokenizer

runner = CliRunner()


def test_train_tokenize_eval_roundtrip(toy_store, tmp_path):
    tok_dir = tmp_path / "tok"
    r = runner.invoke(
        app,
        [
            "tokenizer", "train", "--store", str(toy_store), "-o", str(tok_dir), "--max-particles", "64",
            "type=kmeans", "codebook_size=32", "train.progress=false",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["tokenize", str(tok_dir), str(toy_store), "-q"])
    assert r.exit_code == 0, r.output
    tag = r.output.strip().split("/tokens/")[-1]
    tok = Tokenizer.from_pretrained(tok_dir)
    pre = tok.preprocessing_object()
    assert pre.max_particles == 64
    # the stored ids are exactly what the tokenizer gives on the loader's batches
    cfg = LoaderConfig(batch_size=50, max_particles=64, shuffle=False, bucketing=False)
    b = next(iter(make_dataloader(toy_store, "val", pre, cfg, tokens=tag)))
    direct = tok.encode(b["x"], b["mask"])
    assert torch.equal(b["tokens"], direct)
    assert b["tokens"][b["mask"]].min() >= 0 and b["tokens"][b["mask"]].max() < 32
    # rerunning is a no-op with identical content
    r2 = runner.invoke(app, ["tokenize", str(tok_dir), str(toy_store), "-q"])
    assert r2.exit_code == 0 and r2.output == r.output
    out = tmp_path / "eval"
    r = runner.invoke(
        app,
        [
            "tokenizer",
            "eval",
            str(tok_dir),
            "--store",
            str(toy_store),
            "-o",
            str(out),
            "--max-jets",
            "200",
        ],
    )
    assert r.exit_code == 0, r.output
    q = json.loads((out / "quality.json").read_text())
    assert 0 < q["codebook"]["used_fraction"] <= 1
    assert (out / "resolution.png").stat().st_size > 0 and (out / "token_frequencies.png").is_file()
    assert np.isfinite(q["classifier"]["auc_ratio"])
