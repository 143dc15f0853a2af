"""The production DDP launcher (strategy "ddp": Lightning re-runs the script once per extra rank).

Slow (every rank pays the Lightning import), so excluded by default; the fast DDP test forks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    from jetfm.train import fit
    from tests.train.tiny import SyntheticJets, TinyTask, tiny_config

    torch.manual_seed(0)
    run = Path(sys.argv[1])
    cfg = tiny_config(run, max_steps=4, devices=2, strategy="ddp", checkpoint_every=2)
    fit(TinyTask(), SyntheticJets(batch_size=4), None, cfg)
    """
)


@pytest.mark.slow
def test_ddp_strategy_relaunches_the_script(tmp_path: Path) -> None:
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    prog = tmp_path / "run" / "checkpoints" / "step-0000004" / "trainer_state" / "progress.json"
    d = json.loads(prog.read_text())
    assert d["world_size"] == 2 and d["global_step"] == 4
