"""Headless Chromium check that every image of an HTML page loads (Debian package ``chromium``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="chromium not installed (Debian: apt-get install chromium); headless render check skipped",
)

_COUNT_SCRIPT = (
    "<script>window.addEventListener('load', function () {"
    " var imgs = Array.from(document.images);"
    " document.title = 'loaded ' + imgs.filter(function (i) {"
    " return i.complete && i.naturalWidth > 0; }).length + ' of ' + imgs.length; });</script>"
)


def loaded_images(page: Path, workdir: Path) -> tuple[int, int]:
    """Render ``page`` in headless Chromium; return (images loaded, images on the page).

    A copy of the page is written beside it (same relative image paths) with a script that counts
    the images whose pixels arrived and puts the count in the title, read back from ``--dump-dom``.
    """
    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _COUNT_SCRIPT + "</body>"))
    cmd = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={workdir / 'chromium-profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probe.as_uri(),
    ]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    finally:
        probe.unlink()
    assert res.returncode == 0, res.stderr[-2000:]
    title = re.search(r"<title>loaded (\d+) of (\d+)</title>", res.stdout)
    assert title is not None, res.stdout[:500]
    return int(title.group(1)), int(title.group(2))
