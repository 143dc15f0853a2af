"""The README's library walkthrough runs as written (blocks executed in order, in one namespace)."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_blocks_run(tmp_path, capsys):
    blocks = re.findall(
        r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S
    )
    assert len(blocks) >= 4
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        ns: dict = {}
        for block in blocks:
            exec(compile(block, "README.md", "exec"), ns)
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert "torch.Size([32" in out  # the batch printed by the loader block
    assert ns["hidden"].shape[:2] == ns["batch"]["x"].shape[:2]
    assert (tmp_path / "runs" / "demo-finetune" / "classifier").is_dir()
