"""One static HTML page per run: sections of text, tables and figures, then the config and versions.

The page is self-contained and works offline: CSS is inline, there is no JavaScript and nothing is
fetched; images are PNG files beside ``report.html`` referenced by relative paths, so the run folder
can be copied or archived as a whole. ``report.json`` beside it holds the same tables for machines.
Everything is written atomically (temporary name, then rename), so a killed run never leaves a
half-written report.
"""

from __future__ import annotations

import html
import math
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from jetfm.core.atomic import write_json_atomic, write_text_atomic
from jetfm.core.errors import InputError
from jetfm.evaluate.plots import save_figure

REPORT_NAME = "report.html"
FIGURE_DIR = "figures"
VERSION_PACKAGES: tuple[str, ...] = (
    "jetfm",
    "numpy",
    "scipy",
    "torch",
    "lightning",
    "scikit-learn",
    "matplotlib",
    "mplhep",
    "h5py",
    "awkward",
    "fastjet",
    "pythia8mc",
    "vector-quantize-pytorch",
    "safetensors",
    "pyyaml",
)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
nav ul { columns: 2; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3em; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figure img { max-width: 520px; width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; max-width: 520px; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
.meta { color: #666; font-size: .9em; }
"""


@dataclass(frozen=True)
class Table:
    """Rows of ``{column: value}``; ``columns`` fixes order/subset (default: keys in first-seen order)."""

    rows: Sequence[Mapping[str, Any]]
    caption: str = ""
    columns: Sequence[str] | None = None


@dataclass(frozen=True)
class Image:
    """An image file, ``path`` relative to the run folder (where ``report.html`` is written)."""

    path: str
    caption: str = ""


@dataclass
class Section:
    """A titled block of the report.

    ``text``: plain text; blank lines separate paragraphs (HTML is escaped, not interpreted).
    ``tables``: :class:`Table` or bare lists of row dicts. ``images``: :class:`Image` or relative
    paths of existing files. ``figures``: matplotlib figures saved by :func:`build_report` as
    ``figures/<name>.png`` (captions: the names).
    """

    title: str
    text: str = ""
    tables: Sequence[Table | Sequence[Mapping[str, Any]]] = ()
    images: Sequence[Image | str] = ()
    figures: Mapping[str, Figure] = field(default_factory=dict)


def package_versions(packages: Sequence[str] = VERSION_PACKAGES) -> dict[str, str]:
    """Installed versions (from package metadata; nothing is imported), Python, platform, and the git
    commit of the jetfm source tree when it is a git checkout (editable installs)."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for p in packages:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    sha = _git_commit()
    if sha:
        out["jetfm git commit"] = sha
    return out


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if res.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:  # numpy scalar
        return _fmt(v.item())
    return str(v)


def _table_html(t: Table) -> str:
    rows = list(t.rows)
    cols = (
        list(t.columns)
        if t.columns is not None
        else list(dict.fromkeys(k for r in rows for k in r))
    )
    out = ["<table>"]
    if t.caption:
        out.append(f"<caption>{html.escape(t.caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in cols) + "</tr>")
    for r in rows:
        out.append(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def _paragraphs(text: str) -> str:
    paras = [p.strip() for p in text.strip().split("\n\n") if p.strip()]
    return "\n".join(f"<p>{html.escape(p)}</p>" for p in paras)


def _anchor(i: int) -> str:
    return f"s{i}"


def _check_image(run_dir: Path, rel: str, section: str) -> None:
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise InputError("an image path relative to the run folder", field=section, found=rel)
    if not (run_dir / p).is_file():
        raise InputError("an existing image file", file=run_dir / p, field=section, found="missing")


def _config_text(run_dir: Path, config: str | Path | Mapping[str, Any] | None) -> str:
    if config is None:
        default = run_dir / "config.yaml"
        return (
            default.read_text(encoding="utf-8")
            if default.is_file()
            else "(no config.yaml in run folder)"
        )
    if isinstance(config, Path):
        return config.read_text(encoding="utf-8")
    if isinstance(config, Mapping):
        import yaml

        return yaml.safe_dump(dict(config), sort_keys=False)
    return str(config)


def build_report(
    run_dir: str | Path,
    sections: Sequence[Section],
    *,
    title: str = "jetfm report",
    config: str | Path | Mapping[str, Any] | None = None,
    versions: Mapping[str, str] | None = None,
) -> Path:
    """Write ``run_dir/report.html`` (+ ``figures/*.png`` and ``report.json``); return the HTML path.

    ``config``: the exact config YAML text, a path to it, or a mapping (dumped as YAML); default
    ``run_dir/config.yaml`` if present. ``versions`` default to :func:`package_versions`. Raises
    :class:`InputError` if an image path is absolute, leaves the run folder, or does not exist.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    versions = dict(package_versions() if versions is None else versions)
    body: list[str] = []
    toc: list[str] = []
    summary: list[dict[str, Any]] = []
    for i, sec in enumerate(sections):
        toc.append(f'<li><a href="#{_anchor(i)}">{html.escape(sec.title)}</a></li>')
        parts = [f'<section id="{_anchor(i)}">', f"<h2>{html.escape(sec.title)}</h2>"]
        if sec.text:
            parts.append(_paragraphs(sec.text))
        tables = [t if isinstance(t, Table) else Table(rows=list(t)) for t in sec.tables]
        parts += [_table_html(t) for t in tables]
        images = [im if isinstance(im, Image) else Image(path=str(im)) for im in sec.images]
        for name, fig in sec.figures.items():
            rel = f"{FIGURE_DIR}/{_safe_name(name)}.png"
            save_figure(fig, run_dir / rel)
            images.append(Image(path=rel, caption=name))
        for im in images:
            _check_image(run_dir, im.path, sec.title)
            src = html.escape(Path(im.path).as_posix(), quote=True)
            cap = html.escape(im.caption)
            figcap = f"<figcaption>{cap}</figcaption>" if cap else ""
            parts.append(
                f'<figure><img src="{src}" alt="{cap or src}" loading="eager">{figcap}</figure>'
            )
        parts.append("</section>")
        body.append("\n".join(parts))
        summary.append(
            {
                "title": sec.title,
                "text": sec.text,
                "tables": [
                    {"caption": t.caption, "rows": [dict(r) for r in t.rows]} for t in tables
                ],
                "images": [im.path for im in images],
            }
        )
    cfg = _config_text(run_dir, config)
    n = len(sections)
    toc.append(f'<li><a href="#{_anchor(n)}">config and versions</a></li>')
    body.append(
        "\n".join(
            [
                f'<section id="{_anchor(n)}">',
                "<h2>config and versions</h2>",
                "<h3>config</h3>",
                f"<pre>{html.escape(cfg)}</pre>",
                "<h3>versions</h3>",
                _table_html(
                    Table(rows=[{"package": k, "version": v} for k, v in versions.items()])
                ),
                "</section>",
            ]
        )
    )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            f"<h1>{html.escape(title)}</h1>",
            f'<p class="meta">run folder: {html.escape(str(run_dir.resolve()))} &middot; built {stamp}</p>',
            "<nav><ul>",
            *toc,
            "</ul></nav>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )
    write_json_atomic(
        run_dir / "report.json",
        _strict_json(
            {
                "title": title,
                "built": stamp,
                "sections": summary,
                "config": cfg,
                "versions": versions,
            }
        ),
    )
    out = run_dir / REPORT_NAME
    write_text_atomic(out, page)
    return out


def _safe_name(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return keep or "figure"


def _strict_json(obj: Any) -> Any:
    """Non-finite floats as strings ("inf", "nan"): strict JSON readers reject Infinity/NaN."""
    if isinstance(obj, Mapping):
        return {str(k): _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict_json(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return _strict_json(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj
