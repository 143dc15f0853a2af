"""Masked particle modelling: masking rule, where ordering enters, each target trains."""

from __future__ import annotations

import pytest
import torch

from jetfm.core.errors import ConfigError, InputError
from jetfm.models import BackboneConfig
from jetfm.tasks import MPMConfig, MPMTask, build_task, choose_masked, pt_rank

from .fakes import GridTokenizer, synthetic_batch

TINY = BackboneConfig(dim=32, depth=2, heads=4, n_features=3)


def test_choose_masked_counts_and_never_padding() -> None:
    lengths = torch.tensor([10, 1, 3, 0, 5])
    mask = torch.arange(10)[None] < lengths[:, None]
    g = torch.Generator().manual_seed(0)
    masked = choose_masked(mask, 0.4, g)
    # round(0.4 n), at least one per non-empty jet: 10 -> 4, 1 -> 1, 3 -> 1, 0 -> 0, 5 -> 2
    assert masked.sum(1).tolist() == [4, 1, 1, 0, 2]
    assert not (masked & ~mask).any()
    again = choose_masked(mask, 0.4, torch.Generator().manual_seed(0))
    assert torch.equal(masked, again)  # seeded
    other = choose_masked(mask, 0.4, torch.Generator().manual_seed(1))
    assert not torch.equal(masked, other)


def test_choose_masked_is_uniform_over_real_particles() -> None:
    mask = torch.ones(4000, 5, dtype=torch.bool)
    masked = choose_masked(mask, 0.4, torch.Generator().manual_seed(3))
    freq = masked.float().mean(0)  # each position masked with probability 2/5
    torch.testing.assert_close(freq, torch.full((5,), 0.4), atol=0.03, rtol=0)


def test_pt_rank() -> None:
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    assert pt_rank(mask)[mask].tolist() == [0, 1, 2, 0]


@pytest.mark.parametrize("mae", [False, True])
def test_masked_inputs_are_hidden_from_the_model(mae: bool) -> None:
    torch.manual_seed(0)
    task = MPMTask(MPMConfig(backbone=TINY, target="regression", mae=mae)).eval()
    b = synthetic_batch(B=6, N=8)
    masked = choose_masked(b["mask"], 0.4, torch.Generator().manual_seed(0))
    h = task.masked_hidden(b["x"], b["mask"], masked)
    x2 = b["x"].clone()
    x2[masked] = 50.0  # the answer changes, the prediction must not
    h2 = task.masked_hidden(x2, b["mask"], masked)
    torch.testing.assert_close(h, h2)
    assert h.shape == (int(masked.sum()), 32)


def test_rank_information_only_in_head() -> None:
    """The backbone is permutation-equivariant; only the head's rank embedding sees the order."""
    torch.manual_seed(0)
    task = MPMTask(MPMConfig(backbone=TINY, target="regression")).eval()
    b = synthetic_batch(B=4, N=8)
    perm = torch.randperm(8)
    hid = task.backbone(b["x"], b["mask"])
    hid_p = task.backbone(b["x"][:, perm], b["mask"][:, perm])
    torch.testing.assert_close(hid_p, hid[:, perm], atol=1e-5, rtol=1e-5)
    assert not any("rank" in k for k in task.backbone.state_dict())


def _train(task: MPMTask, steps: int = 30, lr: float = 3e-3) -> list[float]:
    opt = torch.optim.AdamW(task.trainable_parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(steps):
        out = task.loss(synthetic_batch(B=32, N=12, seed=step % 4), generator=g)
        assert torch.isfinite(out["loss"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    return losses


@pytest.mark.parametrize(
    "target,mae",
    [("token", False), ("kmeans", False), ("regression", False), ("flow", False), ("token", True)],
)
def test_loss_decreases(target: str, mae: bool, tokenizer: GridTokenizer) -> None:
    torch.manual_seed(0)
    cfg = MPMConfig(backbone=TINY, target=target, mae=mae)
    task = MPMTask(cfg, tokenizer=tokenizer if target in ("token", "kmeans") else None)
    losses = _train(task)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (target, first, last)
    if target in ("token", "kmeans"):
        out = task.loss(synthetic_batch(seed=9))
        assert 0.0 <= float(out["accuracy"]) <= float(out["top5_accuracy"]) <= 1.0
        assert float(out["accuracy"]) > 1.0 / tokenizer.codebook_size  # better than chance


def test_tokenizer_is_frozen(tokenizer: GridTokenizer) -> None:
    task = MPMTask(MPMConfig(backbone=TINY, target="token"), tokenizer=tokenizer)
    assert all(not p.requires_grad for p in task.tokenizer.parameters())
    task.train()
    assert not task.tokenizer.training
    assert not any(k.startswith("tokenizer.") for k in task.task_state_dict())


def test_predict_masked_shapes(tokenizer: GridTokenizer) -> None:
    b = synthetic_batch(B=5, N=8)
    masked = choose_masked(b["mask"], 0.4, torch.Generator().manual_seed(0))
    M = int(masked.sum())
    tok = MPMTask(MPMConfig(backbone=TINY, target="token"), tokenizer=tokenizer)
    ids = tok.predict_masked(b["x"], b["mask"], masked)
    assert ids.shape == (M,) and int(ids.max()) < tokenizer.codebook_size
    flow = MPMTask(MPMConfig(backbone=TINY, target="flow", flow_steps=4))
    assert flow.predict_masked(b["x"], b["mask"], masked).shape == (M, 3)


def test_config_errors(tokenizer: GridTokenizer) -> None:
    with pytest.raises(ConfigError, match="mask_fraction"):
        MPMConfig(backbone=TINY, mask_fraction=1.0)
    with pytest.raises(ConfigError, match="causal"):
        MPMConfig(backbone=BackboneConfig(dim=32, depth=1, heads=4, causal=True))
    with pytest.raises(ConfigError, match="tokenizer"):
        MPMTask(MPMConfig(backbone=TINY, target="token"))
    with pytest.raises(ConfigError, match="unknown key 'mask_frac'"):
        build_task({"name": "mpm", "mask_frac": 0.3})
    with pytest.raises(ConfigError, match=r"task\.name"):
        build_task({"name": "nope"})
    with pytest.raises(ConfigError, match="tokenizer of 3 features"):
        MPMTask(MPMConfig(backbone=TINY, target="token"), tokenizer=GridTokenizer(n_features=4))
    tokenizer.config = type("Cfg", (), {"type": "vqvae_particle"})()
    with pytest.raises(ConfigError, match="k-means"):
        MPMTask(MPMConfig(backbone=TINY, target="kmeans"), tokenizer=tokenizer)


def test_wrong_feature_count_names_field() -> None:
    task = MPMTask(MPMConfig(backbone=TINY, target="regression"))
    b = synthetic_batch(F=4)
    with pytest.raises(InputError, match=r"backbone\.n_features"):
        task.loss(b)


def test_save_load_identity(tmp_path, tokenizer: GridTokenizer) -> None:
    torch.manual_seed(0)
    task = build_task(
        {"name": "mpm", "target": "regression", "backbone": {"dim": 32, "depth": 1, "heads": 4}}
    )
    task.eval()
    out_dir = task.save_pretrained(
        tmp_path / "run", preprocessing={"feature_names": ["a", "b", "c"]}
    )
    again = MPMTask.from_pretrained(out_dir).eval()
    b = synthetic_batch(B=4, N=8)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.testing.assert_close(
        task.loss(b, generator=g1)["loss"], again.loss(b, generator=g2)["loss"]
    )
    from jetfm.models import Backbone

    bb = Backbone.from_pretrained(out_dir / "backbone")
    torch.testing.assert_close(bb(b["x"], b["mask"]), task.backbone(b["x"], b["mask"]))
    assert bb.preprocessing == {"feature_names": ["a", "b", "c"]}
