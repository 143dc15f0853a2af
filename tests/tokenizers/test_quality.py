"""Tokenizer quality numbers (hand-checked) and plots, on toy jets with true kinematics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from jetfm.data.features import Preprocessing, compute_features
from jetfm.data.loader import pad_batch
from jetfm.tokenizers import TokenizerConfig, build_tokenizer
from jetfm.tokenizers.quality import (
    codebook_stats,
    evaluate_tokenizer,
    jet_observables,
    residual_stats,
)
from tests.conftest import make_toy_jets


@pytest.fixture(scope="module")
def toy() -> tuple[dict, Preprocessing, object]:
    batch = make_toy_jets(400, seed=3)
    pre = Preprocessing.for_set("kin3").fit(batch)
    x = pre.transform(compute_features(batch, pre.feature_names)).astype(np.float32)
    data = pad_batch(x, batch.offsets, batch, np.arange(batch.n_jets), 128)
    return data, pre, batch


def test_residual_stats_hand_values() -> None:
    s = residual_stats(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.0, 4.0]))
    assert s["bias"] == pytest.approx(-0.125)
    assert s["std"] == pytest.approx(math.sqrt(1.1875 / 4))
    assert s["w1"] == pytest.approx(0.375)  # mean |difference| of the sorted samples
    r = residual_stats(np.array([2.0, 4.0, 0.0]), np.array([3.0, 3.0, 1.0]), relative=True)
    assert r["bias"] == pytest.approx(0.125)  # (0.5 - 0.25) / 2; orig == 0 skipped


def test_codebook_stats_hand_values() -> None:
    s = codebook_stats(torch.tensor([[0, 0, 1, -1], [2, -1, -1, -1]]), 4)
    assert s["counts"].tolist() == [2, 1, 1, 0]
    assert s["n_used"] == 3 and s["used_fraction"] == 0.75 and s["n_tokens"] == 4
    assert s["perplexity"] == pytest.approx(2**1.5)  # p = (1/2, 1/4, 1/4)


def test_observables_of_original_features_match_the_jets(toy) -> None:
    data, pre, batch = toy
    obs = jet_observables(data["x"].numpy(), data["mask"].numpy(), data["jet"].numpy(), pre)
    # toy particles are massless, so features -> massless particles reproduce the jet exactly
    np.testing.assert_allclose(obs["mass"], batch.jets["mass"], rtol=2e-3, atol=0.05)
    np.testing.assert_allclose(obs["pt"], batch.jets["pt"], rtol=1e-4)
    np.testing.assert_array_equal(obs["n_particles"], batch.counts())
    assert np.all((obs["tau21"] > 0) & (obs["tau21"] <= 1.0 + 1e-9))


def test_evaluate_tokenizer_end_to_end(toy, tmp_path) -> None:
    data, pre, _ = toy
    tok = build_tokenizer(
        TokenizerConfig(type="kmeans", codebook_size=128), preprocessing=pre.to_dict()
    )
    tok.fit(data["x"][data["mask"]], seed=0)
    res = evaluate_tokenizer(tok, data, seed=0)
    s = res.summary
    assert s["n_jets"] == 400 and s["codebook"]["n_tokens"] == int(data["mask"].sum())
    assert 0 < s["codebook"]["used_fraction"] <= 1
    for name in ("deta", "dphi", "log_pt"):
        f = s["features_standardised"][name]
        assert 0 < f["std"] < 0.5 and abs(f["bias"]) < 0.05
    # physical deta resolution = standardised resolution x the fitted std
    assert s["features_physical"]["deta"]["std"] == pytest.approx(
        s["features_standardised"]["deta"]["std"] * pre.std[0], rel=1e-6
    )
    assert s["jets"]["n_particles"]["std"] == 0  # one token per particle
    assert 0 < s["jets"]["mass"]["half_width_68"] < 0.3
    c = s["classifier"]
    assert c["auc_original"] > 0.8 and 0.8 < c["auc_ratio"] < 1.1
    assert c["auc_ratio"] == pytest.approx(c["auc_decoded"] / c["auc_original"])
    path = res.to_json(tmp_path / "quality.json")
    assert json.loads(path.read_text())["classifier"]["auc_original"] == c["auc_original"]
    md = res.to_markdown()
    assert "| mass |" in md and "AUC original" in md and "128 of 128 codes used" in md

    from jetfm.evaluate.tokenizer_plots import (
        plot_jet_observables,
        plot_resolution,
        plot_token_frequencies,
    )

    figs = [
        plot_resolution(res.arrays, ("deta", "dphi", "log_pt")),
        plot_jet_observables(res.arrays),
        plot_token_frequencies(res.arrays["token_counts"], title="k-means 128"),
    ]
    assert all(isinstance(f, Figure) for f in figs)
    assert len(figs[1].axes) == 10  # 5 observables x (distribution + ratio)
    assert len(figs[0].axes) == 3 and len(figs[2].axes) == 2


def test_without_preprocessing_only_standardised_numbers(toy) -> None:
    data, _, _ = toy
    tok = build_tokenizer(TokenizerConfig(type="kmeans", codebook_size=16))
    tok.fit(data["x"][data["mask"]])
    s = evaluate_tokenizer(tok, data, max_jets=50).summary
    assert s["n_jets"] == 50 and "features_standardised" in s
    assert "jets" not in s and "classifier" not in s
