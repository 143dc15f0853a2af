"""The tokenizer training driver and the shipped tokenizer configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jetfm.core.config import from_dict, load_config
from jetfm.core.errors import ConfigError, InputError
from jetfm.tokenizers import Tokenizer, TokenizerConfig, build_tokenizer
from jetfm.tokenizers.train import evaluate_reconstruction, resolve_device, train_tokenizer

from .conftest import gaussian_mixture_jets

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("tokenizer*.yaml"))


def small_cfg(kind: str, steps: int, **extra) -> TokenizerConfig:
    d = {
        "type": kind,
        "codebook_size": 64,
        "latent_dim": 4,
        "hidden_dim": 32,
        "depth": 2,
        "train": {
            "steps": steps,
            "batch_size": 32,
            "val_every": 10,
            "lr": 3e-3,
            "warmup_steps": 5,
            "progress": False,
        },
    }
    if kind == "fsq":
        d["codebook_size"] = 125
        d["quantizer"] = {"fsq_levels": [5, 5, 5]}
    d.update(extra)
    return from_dict(TokenizerConfig, d)


def untrained_mse(cfg: TokenizerConfig, data: dict, val: dict) -> float:
    torch.manual_seed(cfg.train.seed)
    tok = build_tokenizer(cfg)
    tok.train()
    for s in range(0, 320, 32):  # the same k-means initialisation the trainer does, no steps
        tok(data["x"][s : s + 32], data["mask"][s : s + 32])
    return evaluate_reconstruction(tok.eval(), val["x"], val["mask"])["mse"]


@pytest.mark.parametrize("kind", ["vqvae_particle", "fsq"])
def test_round_trip_error_decreases_with_training(kind, mixture, mixture_val, tmp_path) -> None:
    # FSQ's fixed grid converges more slowly than a k-means-initialised codebook: larger lr
    cfg = small_cfg(kind, steps=80, latent_dim=3) if kind == "fsq" else small_cfg(kind, steps=80)
    if kind == "fsq":
        cfg.train.lr = 1e-2
    before = untrained_mse(cfg, mixture, mixture_val)
    path = train_tokenizer(cfg, mixture, mixture_val, None, tmp_path / kind)
    meta = json.loads((path / "meta.json").read_text())
    history = json.loads((path / "train_history.json").read_text())
    assert [h["step"] for h in history] == list(range(10, 81, 10))
    after = meta["val_mse"]
    assert after < 0.5 * before, (before, after)
    assert after < 0.25  # data: 6 clusters of width 0.3 (per-feature variance 0.09)
    tok = Tokenizer.from_pretrained(path)
    assert evaluate_reconstruction(tok, mixture_val["x"], mixture_val["mask"])[
        "mse"
    ] == pytest.approx(after)


def test_conditional_training_runs_and_loads(mixture, mixture_val, tmp_path) -> None:
    cfg = small_cfg("vqvae_conditional", steps=12, heads=4)
    path = train_tokenizer(cfg, mixture, mixture_val, None, tmp_path / "cond")
    tok = Tokenizer.from_pretrained(path)
    assert tok.conditional and json.loads((path / "meta.json").read_text())["train_steps"] == 12


def test_training_is_seeded(mixture, tmp_path) -> None:
    cfg = small_cfg("vqvae_particle", steps=15)
    a = train_tokenizer(cfg, mixture, None, None, tmp_path / "a")
    b = train_tokenizer(cfg, mixture, None, None, tmp_path / "b")
    assert Tokenizer.from_pretrained(a).content_hash == Tokenizer.from_pretrained(b).content_hash
    cfg.train.seed = 1
    c = train_tokenizer(cfg, mixture, None, None, tmp_path / "c")
    assert Tokenizer.from_pretrained(c).content_hash != Tokenizer.from_pretrained(a).content_hash


def test_iterable_of_batches_and_preprocessing_saved(mixture, tmp_path) -> None:
    batches = [
        {"x": mixture["x"][s : s + 50], "mask": mixture["mask"][s : s + 50]}
        for s in range(0, 400, 50)
    ]
    pre = {
        "feature_names": ["deta", "dphi", "log_pt"],
        "mean": [0.0, 0.0, 1.5],
        "std": [0.2, 0.2, 1.1],
    }
    path = train_tokenizer(
        small_cfg("vqvae_particle", steps=20), batches, batches[:2], pre, tmp_path / "it"
    )
    assert json.loads((path / "preprocessing.json").read_text())["std"] == [0.2, 0.2, 1.1]
    assert Tokenizer.from_pretrained(path).preprocessing_object().mean.tolist() == [0.0, 0.0, 1.5]


def test_kmeans_tokenizer_round_trip(mixture, mixture_val, tmp_path) -> None:
    cfg = small_cfg("kmeans", steps=1, codebook_size=32)
    path = train_tokenizer(cfg, mixture, mixture_val, None, tmp_path / "km")
    tok = Tokenizer.from_pretrained(path)
    ids = tok.encode(mixture_val["x"], mixture_val["mask"])
    rec = tok.decode(ids, mixture_val["mask"])
    m = mixture_val["mask"]
    # decoding returns exactly the assigned centroid, which is the nearest one
    assert torch.equal(rec[m], tok.centroids[ids[m]])
    assert torch.equal(ids[m], torch.cdist(mixture_val["x"][m], tok.centroids).argmin(dim=1))
    mse = ((rec[m] - mixture_val["x"][m]) ** 2).mean().item()
    assert mse < 0.09  # below the within-cluster variance 0.3^2 of the 6-component mixture
    # data made of exactly K distinct points round-trips exactly
    pts = torch.randn(8, 3, generator=torch.Generator().manual_seed(2)) * 5
    x = pts.repeat(10, 1).view(10, 8, 3)
    mask = torch.ones(10, 8, dtype=torch.bool)
    exact = build_tokenizer(from_dict(TokenizerConfig, {"type": "kmeans", "codebook_size": 8}))
    exact.fit(x[mask], seed=0, iters=30)
    assert torch.allclose(exact.decode(exact.encode(x, mask), mask), x, atol=1e-5)


def test_kmeans_pt_weight_gives_hard_particles_finer_cells(mixture, tmp_path) -> None:
    from jetfm.data.features import Preprocessing

    # standardised log_pt = (log_pt - 1.5) / 1.1, so pT^1 weights are exp(1.1 * x + 1.5)
    pre = Preprocessing(
        feature_names=("deta", "dphi", "log_pt"),
        mean=np.array([0.0, 0.0, 1.5]),
        std=np.array([0.2, 0.2, 1.1]),
    )
    toks = {}
    for power in (0.0, 1.0):
        cfg = small_cfg("kmeans", steps=1, codebook_size=32)
        cfg.train.kmeans_pt_weight = power
        toks[power] = Tokenizer.from_pretrained(
            train_tokenizer(cfg, mixture, None, pre, tmp_path / f"km{power}")
        )
    w = toks[1.0].pt_weights(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), 1.0)
    assert (w[1] / w[0]).item() == pytest.approx(float(np.exp(1.1)), rel=1e-5)
    # the pT-weighted centroids sit at higher log_pt on average than the unweighted ones
    assert toks[1.0].centroids[:, 2].mean() > toks[0.0].centroids[:, 2].mean() + 0.2
    m = mixture["mask"]
    hard = mixture["x"][m][:, 2] > mixture["x"][m][:, 2].quantile(0.8)

    def hard_mse(tok: Tokenizer) -> float:
        rec = tok.decode(tok.encode(mixture["x"], m), m)[m]
        return float(((rec - mixture["x"][m])[hard] ** 2).mean())

    assert hard_mse(toks[1.0]) < hard_mse(toks[0.0])
    with pytest.raises(ConfigError, match="kmeans_pt_weight"):
        from_dict(TokenizerConfig, {"type": "kmeans", "train": {"kmeans_pt_weight": -1.0}})


def test_kmeans_feature_weights_give_finer_cells(mixture, mixture_val, tmp_path) -> None:
    """Weighted features: nearest centroid under the weighted distance, centroids in the
    unweighted units, the weighted feature's error shrinks, and the weights survive a save."""
    toks = {}
    for w in (1.0, 3.0):
        cfg = small_cfg("kmeans", steps=1, codebook_size=32)
        cfg.kmeans_feature_weights = {"deta": w, "dphi": w}
        toks[w] = Tokenizer.from_pretrained(
            train_tokenizer(cfg, mixture, None, None, tmp_path / f"km{w}")
        )
    tok = toks[3.0]
    assert tok.feature_scale.tolist() == [3.0, 3.0, 1.0]
    x, m = mixture_val["x"], mixture_val["mask"]
    ids = tok.encode(x, m)
    s = torch.tensor([3.0, 3.0, 1.0])
    assert torch.equal(ids[m], torch.cdist(x[m] * s, tok.centroids * s).argmin(dim=1))
    assert torch.equal(tok.decode(ids, m)[m], tok.centroids[ids[m]])

    def errors(t: Tokenizer) -> torch.Tensor:
        return ((t.decode(t.encode(x, m), m)[m] - x[m]) ** 2).mean(dim=0)  # (F,)

    e1, e3 = errors(toks[1.0]), errors(tok)
    assert e3[:2].sum() < e1[:2].sum() and e3[2] > e1[2]  # angles finer, log pT coarser
    with pytest.raises(ConfigError, match="kmeans_feature_weights"):
        from_dict(TokenizerConfig, {"type": "kmeans", "kmeans_feature_weights": {"eta": 2.0}})
    with pytest.raises(ConfigError, match="kmeans_feature_weights"):
        from_dict(TokenizerConfig, {"type": "kmeans", "kmeans_feature_weights": {"deta": 0.0}})
    with pytest.raises(ConfigError, match="kmeans_feature_weights"):
        from_dict(TokenizerConfig, {"kmeans_feature_weights": {"deta": 2.0}})  # a VQ-VAE


def test_two_level_kmeans_tokens(mixture, mixture_val, tmp_path) -> None:
    """kmeans_residual_codes: token = cell x R + residual code, where the cell is the nearest cell
    centroid and the residual code the nearest shared code of the offset in cell spreads; it
    decodes to centroid + spread x code, beats its cells alone and survives a save."""
    cfg = small_cfg("kmeans", steps=1, codebook_size=32, kmeans_residual_codes=4)
    assert cfg.n_cells == 8
    tok = Tokenizer.from_pretrained(train_tokenizer(cfg, mixture, None, None, tmp_path / "two"))
    assert tok.cell_centroids.shape == (8, 3) and tok.residual_codes.shape == (4, 3)
    assert bool((tok.cell_spread > 0).all())
    x, m = mixture_val["x"], mixture_val["mask"]
    ids = tok.encode(x, m)
    cell = torch.cdist(x[m], tok.cell_centroids).argmin(dim=1)
    offset = (x[m] - tok.cell_centroids[cell]) / tok.cell_spread[cell]
    res = torch.cdist(offset, tok.residual_codes).argmin(dim=1)
    assert torch.equal(ids[m], cell * 4 + res)
    want = tok.cell_centroids[cell] + tok.cell_spread[cell] * tok.residual_codes[res]
    torch.testing.assert_close(tok.decode(ids, m)[m], want)
    # the cells' spreads are the RMS offsets of the fitted particles in each cell
    train_x = mixture["x"][mixture["mask"]]
    c_train = torch.cdist(train_x, tok.cell_centroids).argmin(dim=1)
    k = int(torch.bincount(c_train).argmax())
    rms = (train_x[c_train == k] - tok.cell_centroids[k]).square().mean(dim=0).sqrt()
    torch.testing.assert_close(tok.cell_spread[k], rms, rtol=1e-4, atol=1e-5)

    def mse(t: Tokenizer) -> float:
        return float(((t.decode(t.encode(x, m), m)[m] - x[m]) ** 2).mean())

    cells_only = small_cfg("kmeans", steps=1, codebook_size=8)
    flat8 = Tokenizer.from_pretrained(
        train_tokenizer(cells_only, mixture, None, None, tmp_path / "8")
    )
    assert mse(tok) < 0.6 * mse(flat8)  # 4 residual codes per cell: about half the error
    for bad in ({"kmeans_residual_codes": 5}, {"kmeans_residual_codes": 32}):
        with pytest.raises(ConfigError, match="kmeans_residual_codes"):
            from_dict(TokenizerConfig, {"type": "kmeans", "codebook_size": 32, **bad})
    with pytest.raises(ConfigError, match="kmeans_residual_codes"):
        from_dict(TokenizerConfig, {"codebook_size": 32, "kmeans_residual_codes": 4})  # a VQ-VAE


def test_kmeans_pt_weight_needs_log_pt(mixture, tmp_path) -> None:
    cfg = small_cfg("kmeans", steps=1, codebook_size=8, feature_names=["deta", "dphi", "pt_rel"])
    cfg.train.kmeans_pt_weight = 0.5
    with pytest.raises(InputError, match="log_pt"):
        train_tokenizer(cfg, mixture, None, None, tmp_path / "km")


def test_bad_training_data_raises(tmp_path) -> None:
    with pytest.raises(InputError, match="x"):
        train_tokenizer(
            small_cfg("vqvae_particle", steps=2),
            {"mask": torch.ones(2, 2, dtype=torch.bool)},
            None,
            None,
            tmp_path / "x",
        )
    with pytest.raises(InputError, match=r"x \(J, N, 2\)"):
        bad = gaussian_mixture_jets(4)
        train_tokenizer(
            small_cfg("vqvae_particle", steps=2, feature_names=["a", "b"]),
            bad,
            None,
            None,
            tmp_path / "y",
        )


def test_resolve_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="device"):
            resolve_device("cuda")


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(TokenizerConfig, {"codebok_size": 512})
    with pytest.raises(ConfigError, match="prod"):
        from_dict(
            TokenizerConfig,
            {"type": "fsq", "codebook_size": 100, "quantizer": {"fsq_levels": [8, 8, 8]}},
        )
    with pytest.raises(ConfigError, match="affine"):
        from_dict(TokenizerConfig, {"quantizer": {"ema": True, "affine": True}})
    with pytest.raises(ConfigError, match="heads"):
        from_dict(TokenizerConfig, {"type": "vqvae_conditional", "hidden_dim": 30, "heads": 4})
    # the fsq type implies an FSQ quantiser
    assert from_dict(TokenizerConfig, {"type": "fsq"}).quantizer.kind == "fsq"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_parse(path: Path) -> None:
    cfg = load_config(TokenizerConfig, path)
    tok = build_tokenizer(cfg)
    assert tok.codebook_size == cfg.codebook_size


def test_shipped_configs_exist() -> None:
    names = {p.name for p in CONFIGS}
    assert {
        "tokenizer.yaml",
        "tokenizer_omnijet.yaml",
        "tokenizer_fsq.yaml",
        "tokenizer_kmeans.yaml",
    } <= names
