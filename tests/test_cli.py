"""The CLI: every command has --help; bad input gives a one-line error and exit code 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from jetfm.cli import app

runner = CliRunner()


def _commands() -> list[list[str]]:
    import typer.main

    group = typer.main.get_command(app)
    out = []
    for name, cmd in group.commands.items():
        out.append([name])
        for sub in getattr(cmd, "commands", {}) or {}:
            out.append([name, sub])
    return out


def test_top_level_help():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for name in ("simulate", "convert", "info", "quickstart"):
        assert name in r.output


@pytest.mark.parametrize("cmd", _commands(), ids=lambda c: " ".join(c))
def test_every_command_has_help(cmd):
    r = runner.invoke(app, [*cmd, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage" in r.output


def test_unknown_config_key_is_an_error(tmp_path):
    r = runner.invoke(app, ["simulate", "-o", str(tmp_path / "s"), "--set", "jets_per_clas=3"])
    assert r.exit_code == 2
    assert "jets_per_clas" in r.output and "unknown key" in r.output
    assert not (tmp_path / "s").exists()


def test_bad_yaml_value_names_file_and_field(tmp_path):
    cfg = tmp_path / "sim.yaml"
    cfg.write_text("jets_per_class: many\n")
    r = runner.invoke(app, ["simulate", "--config", str(cfg)])
    assert r.exit_code == 2
    assert "sim.yaml" in r.output and "jets_per_class" in r.output


def test_info_on_missing_store(tmp_path):
    r = runner.invoke(app, ["info", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "manifest.json" in r.output


def test_info_prints_summary(toy_store):
    r = runner.invoke(app, ["info", str(toy_store)])
    assert r.exit_code == 0, r.output
    assert "train" in r.output and "QCD" in r.output and "Tbqq" in r.output


def test_convert_corrupt_file(tmp_path):
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    r = runner.invoke(app, ["convert", str(bad), str(tmp_path / "out"), "-q"])
    assert r.exit_code == 2
    assert "broken.h5" in r.output
    assert not (tmp_path / "out").exists()
