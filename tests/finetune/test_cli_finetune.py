"""jetfm finetune -> predict -> export through the CLI on the toy store."""

from __future__ import annotations

import h5py
from typer.testing import CliRunner

from jetfm.cli import app

runner = CliRunner()


def test_cli_finetune_predict_export(mpm_run, toy_store, tmp_path):
    out = tmp_path / "ft"
    r = runner.invoke(
        app,
        [
            "finetune", f"pretrained={mpm_run}", "regime=finetune", f"data.store={toy_store}",
            "data.n_labels=64", "data.val_split=null", f"train.output_dir={out}", "train.max_steps=3",
            "train.progress_bar=false", "train.quiet=true", "loader.max_particles=64",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    classifier = out / "classifier"
    r = runner.invoke(
        app, ["predict", str(classifier), str(toy_store), "-o", str(tmp_path / "s.h5")]
    )
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["scores"].shape[0] == 300  # the whole toy test split
    r = runner.invoke(app, ["export", str(classifier), str(tmp_path / "tagger.onnx")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "tagger.onnx").stat().st_size > 0
    r = runner.invoke(app, ["finetune", f"pretrained={mpm_run}", "regime=melted"])
    assert r.exit_code == 2 and "regime" in r.output
