"""Every fine-tuning / sweep / transfer recipe in configs/ parses into its dataclass; typos are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from jetfm.core.config import load_config
from jetfm.core.errors import ConfigError
from jetfm.evaluate.cwola_study import CwolaConfig
from jetfm.evaluate.sweep import SweepConfig
from jetfm.train.finetune import FinetuneConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
KINDS = {
    "finetune.yaml": FinetuneConfig,
    "sweep.yaml": SweepConfig,
    "sweep_cwola.yaml": CwolaConfig,
    "transfer_unseen_classes.yaml": SweepConfig,
    "transfer_new_tune.yaml": SweepConfig,
    "transfer_real_qg.yaml": SweepConfig,
}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_recipe_parses(name: str) -> None:
    cfg = load_config(KINDS[name], CONFIGS / name)
    ft = cfg if isinstance(cfg, FinetuneConfig) else cfg.finetune
    assert ft.pretrained is not None and ft.data.store.parts
    if isinstance(cfg, SweepConfig):
        assert len(cfg.seeds) >= 3 and set(cfg.regimes) == {"frozen", "finetune", "scratch"}


def test_transfer_recipes_say_how_to_run_them() -> None:
    for name in ("transfer_unseen_classes.yaml", "transfer_new_tune.yaml", "transfer_real_qg.yaml"):
        text = (CONFIGS / name).read_text()
        assert "jetfm pretrain" in text and "jetfm sweep -c configs/" + name in text


def test_unknown_keys_and_bad_values_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(FinetuneConfig, CONFIGS / "finetune.yaml", ["learning_rate=0.1"])
    with pytest.raises(ConfigError, match="regime"):
        load_config(FinetuneConfig, CONFIGS / "finetune.yaml", ["regime=partial"])
    with pytest.raises(ConfigError, match="regimes"):
        load_config(SweepConfig, CONFIGS / "sweep.yaml", ["regimes=[frozen, lora]"])
    with pytest.raises(ConfigError, match="signal_fractions"):
        load_config(CwolaConfig, CONFIGS / "sweep_cwola.yaml", ["signal_fractions=[1.5]"])
