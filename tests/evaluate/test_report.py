"""Static HTML report: structure, escaping, atomic files, and (if chromium is installed) a real render."""

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from jetfm.core.errors import InputError
from jetfm.evaluate.plots import loss_curves, save_figure
from jetfm.evaluate.report import Image, Section, Table, build_report
from tests.chromium import loaded_images, needs_chromium


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.tags: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(a["src"])
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])
        if tag in ("script", "link"):
            self.external.append(tag)


def _small_report(run_dir):
    steps = np.arange(50)
    save_figure(
        loss_curves({"train": (steps, np.exp(-steps / 10))}), run_dir / "plots" / "loss.png"
    )
    (run_dir / "config.yaml").write_text("model:\n  width: 64  # <exact text>\n", encoding="utf-8")
    sections = [
        Section(
            title="Classification",
            text="Top vs QCD on 1000 test jets.\n\nSecond paragraph with <b>markup</b> & symbols.",
            tables=[
                Table(
                    rows=[{"model": "ParT", "auc": 0.98123456, "rej_50": float("inf")}],
                    caption="test set",
                ),
                [{"a": 1, "b": np.float32(2.5)}],
            ],
            images=[Image("plots/loss.png", "training loss"), "plots/loss.png"],
        ),
        Section(
            title="Generation",
            figures={"loss curve/val": loss_curves({"val": (steps, 1 / (1 + steps))})},
        ),
    ]
    return build_report(
        run_dir, sections, title="toy run", versions={"jetfm": "0.1.0", "numpy": "2"}
    )


def test_report_structure_and_files(tmp_path):
    out = _small_report(tmp_path)
    assert out == tmp_path / "report.html"
    text = out.read_text(encoding="utf-8")
    p = _Collector()
    p.feed(text)
    assert p.external == []  # nothing fetched, no scripts, no stylesheets to load
    assert p.imgs == ["plots/loss.png", "plots/loss.png", "figures/loss_curve_val.png"]
    for src in p.imgs:
        assert (tmp_path / src).read_bytes()[:4] == b"\x89PNG"
    # escaping, number formatting, sections incl. the final config-and-versions one
    assert "&lt;b&gt;markup&lt;/b&gt; &amp; symbols" in text and "<b>markup" not in text
    assert "0.9812" in text and "inf" in text
    assert re.findall(r"<h2>(.*?)</h2>", text) == [
        "Classification",
        "Generation",
        "config and versions",
    ]
    assert "width: 64  # &lt;exact text&gt;" in text
    assert "<td>numpy</td><td>2</td>" in text
    meta = json.loads((tmp_path / "report.json").read_text())
    assert meta["sections"][0]["tables"][0]["rows"][0]["rej_50"] == "inf"  # strict JSON
    assert meta["config"].startswith("model:")
    assert not [f for f in tmp_path.rglob(".*") if "tmp" in f.name]  # atomic writes cleaned up


def test_report_rejects_missing_or_escaping_images(tmp_path):
    with pytest.raises(InputError, match="existing image"):
        build_report(tmp_path, [Section("x", images=["nope.png"])], versions={})
    with pytest.raises(InputError, match="relative"):
        build_report(tmp_path, [Section("x", images=["../outside.png"])], versions={})
    assert not (tmp_path / "report.html").exists()


@needs_chromium
def test_report_renders_in_headless_chromium(tmp_path):
    out = _small_report(tmp_path)
    assert loaded_images(out, tmp_path) == (3, 3)


def test_package_versions_and_default_config(tmp_path):
    from jetfm.evaluate.report import package_versions

    v = package_versions(("numpy", "surely-not-a-package"))
    assert v["numpy"] == np.__version__
    assert v["surely-not-a-package"] == "not installed"
    assert v["python"].count(".") == 2
    out = build_report(tmp_path, [], config={"seed": 1, "model": {"width": 8}})
    text = out.read_text(encoding="utf-8")
    assert "seed: 1\nmodel:\n  width: 8" in text  # mapping dumped as YAML, key order kept
    assert f"<td>numpy</td><td>{np.__version__}</td>" in text  # default versions
