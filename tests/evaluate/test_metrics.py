"""Classification metrics: hand-computed values on tiny score arrays, and agreement with scikit-learn."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from jetfm.core.errors import InputError
from jetfm.evaluate.metrics import (
    accuracy,
    aggregate_seeds,
    background_rejection,
    classification_summary,
    eps_b_at_eps_s,
    eps_s_at_eps_b,
    format_mean_std,
    pair_scores,
    rejection_at,
    roc_auc,
    roc_curve,
    significance_improvement,
)

# Untied toy: signal scores 0.9 0.7 0.6 0.3, background 0.8 0.5 0.4 0.2 0.1.
SIG = [0.9, 0.7, 0.6, 0.3]
BKG = [0.8, 0.5, 0.4, 0.2, 0.1]
Y = np.array([1] * 4 + [0] * 5)
S = np.array(SIG + BKG)


def test_accuracy_binary_and_multiclass():
    # >= 0.5 is signal: signal 0.9 0.7 0.6 right, 0.3 wrong; background 0.8 0.5 wrong, 0.4 0.2 0.1
    # right -> 6 of 9
    assert accuracy(Y, S) == pytest.approx(6 / 9)
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.4, 0.4, 0.2]])
    # argmax picks the first of a tie (row 3 -> class 0)
    assert accuracy(np.array([0, 2, 0, 0]), probs) == pytest.approx(3 / 4)


def test_auc_hand_value_and_sklearn():
    # pairs (s, b) with s > b: 0.9 beats 5, 0.7 beats 4, 0.6 beats 4, 0.3 beats 2 -> 15 of 20
    assert roc_auc(Y, S) == pytest.approx(15 / 20)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = rng.normal(y * 0.8, 1.0).round(1)  # rounded: plenty of ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_multiclass_ovr_macro_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 400)
    logits = rng.normal(0, 1, (400, 4)) + 1.2 * np.eye(4)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ref = roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert roc_auc(y, p) == pytest.approx(ref)


def test_roc_curve_staircase():
    eps_s, eps_b, thr = roc_curve(Y, S)
    assert (eps_s[0], eps_b[0]) == (0.0, 0.0)
    np.testing.assert_allclose(thr[1:], sorted(S, reverse=True))
    np.testing.assert_allclose(eps_s[1:], [0.25, 0.25, 0.5, 0.75, 0.75, 0.75, 1, 1, 1])
    np.testing.assert_allclose(eps_b[1:], [0, 0.2, 0.2, 0.2, 0.4, 0.6, 0.6, 0.8, 1])


def test_rejection_untied():
    # eps_S = 0.5 is reached at threshold 0.7 with eps_B = 1/5; eps_S = 0.3 lies on the flat step
    # between (0.25, 0.2) and (0.5, 0.2) -> eps_B = 0.2 too.
    rej = background_rejection(Y, S)
    assert rej == {0.5: pytest.approx(5.0), 0.3: pytest.approx(5.0)}
    # eps_S = 0.25 is first reached with eps_B = 0 -> infinite rejection
    tpr, fpr, _ = roc_curve(Y, S)
    assert rejection_at(tpr, fpr, 0.25) == math.inf
    # lowest eps_B at a tie of eps_S: at 0.75 the points are eps_B 0.2, 0.4, 0.6 -> 0.2
    assert eps_b_at_eps_s(tpr, fpr, 0.75) == pytest.approx(0.2)


def test_rejection_interpolates_along_tied_segment():
    # A tie at 0.5 holds 2 of 4 signal and 2 of 4 background jets: the ROC goes straight from
    # (0.25, 0) to (0.75, 0.5). eps_S = 0.5 -> eps_B = 0.25 (R = 4); eps_S = 0.3 -> eps_B = 0.05 (R = 20).
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.5, 0.5, 0.2, 0.5, 0.5, 0.1, 0.1])
    rej = background_rejection(y, s)
    assert rej[0.5] == pytest.approx(4.0)
    assert rej[0.3] == pytest.approx(20.0)


def test_eps_s_at_eps_b():
    tpr, fpr, _ = roc_curve(Y, S)
    assert eps_s_at_eps_b(tpr, fpr, 0.2) == pytest.approx(0.75)  # highest eps_S at eps_B = 0.2
    assert eps_s_at_eps_b(tpr, fpr, 0.1) == pytest.approx(
        0.25
    )  # flat step from (0.25, 0) to (0.25, .2)
    assert eps_s_at_eps_b(tpr, fpr, 0.5) == pytest.approx(0.75)


def test_pair_scores_parT_convention():
    labels = np.array([0, 1, 2, 2, 1])
    probs = np.array(
        [[0.5, 0.3, 0.2], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2], [0.0, 0.0, 1.0]]
    )
    y, s = pair_scores(labels, probs, signal=2, background=0)
    np.testing.assert_array_equal(y, [0, 1, 1])  # class-1 jets dropped
    np.testing.assert_allclose(s, [0.2 / 0.7, 0.8 / 0.9, 0.2 / 0.4])
    summary = classification_summary(labels, probs, signal=2, background=0)
    assert summary["pair_auc"] == pytest.approx(1.0)
    assert summary["rej_50"] == math.inf
    assert summary["accuracy"] == pytest.approx(2 / 5)
    with pytest.raises(InputError, match="class index"):
        pair_scores(labels, probs, signal=3, background=0)


def test_summary_binary_keys():
    out = classification_summary(Y, S)
    assert set(out) == {"accuracy", "auc", "rej_50", "rej_30"}
    assert out["rej_50"] == pytest.approx(5.0)


def test_significance_improvement():
    # 10 signal at 0.1 .. 1.0; background: 10 at 0.55, 90 at 0.0 (110 jets).
    y = np.array([1] * 10 + [0] * 100)
    s = np.concatenate([np.arange(1, 11) / 10, np.full(10, 0.55), np.zeros(90)])
    # Cuts above 0.55 keep < 10 background jets (excluded with min_background=10). Cut at 0.55:
    # 5 signal + 10 background -> SI = 0.5 / sqrt(0.1) = 1.58; cut at 0.1: all 10 signal + the same
    # 10 background -> SI = 1 / sqrt(0.1) = 3.16 (the best); cut at 0.0 keeps everything -> SI = 1.
    out = significance_improvement(y, s, min_background=10)
    assert out["si"] == pytest.approx(1 / math.sqrt(0.1))
    assert (out["eps_s"], out["eps_b"], out["threshold"]) == (1.0, pytest.approx(0.1), 0.1)
    # at least 11 background jets: only the cut at 0.0 qualifies
    assert significance_improvement(y, s, min_background=11)["si"] == pytest.approx(1.0)
    # fixed eps_B = 0.1: highest eps_S at that eps_B is 1.0; eps_B = 0.05 lies on the ROC segment
    # (eps_S, eps_B) = (0.5, 0) -> (0.5, 0.1) of the tie at 0.55, so eps_S = 0.5
    assert significance_improvement(y, s, eps_b=0.1)["si"] == pytest.approx(1 / math.sqrt(0.1))
    half = significance_improvement(y, s, eps_b=0.05)
    assert half["eps_s"] == pytest.approx(0.5)
    assert half["si"] == pytest.approx(0.5 / math.sqrt(0.05))
    assert math.isnan(half["threshold"])
    with pytest.raises(InputError, match="min_background"):
        significance_improvement(y, s, min_background=1000)


def test_aggregate_seeds():
    runs = [
        {"auc": 0.9, "rej_50": 10.0},
        {"auc": 0.92, "rej_50": 14.0},
        {"auc": 0.94, "rej_50": 12.0},
    ]
    agg = aggregate_seeds(runs)
    assert agg["auc"]["mean"] == pytest.approx(0.92)
    assert agg["auc"]["std"] == pytest.approx(0.02)  # sample std of 0.90, 0.92, 0.94
    assert agg["rej_50"] == {"mean": pytest.approx(12.0), "std": pytest.approx(2.0), "n": 3}
    assert aggregate_seeds(runs[:1])["auc"] == {"mean": 0.9, "std": 0.0, "n": 1}
    with pytest.raises(InputError, match="metrics"):
        aggregate_seeds([{"auc": 0.9}, {"acc": 0.8}])
    assert format_mean_std(0.91234, 0.0123) == "0.912 ± 0.012"
    assert format_mean_std(123.4, 5.6) == "123.4 ± 5.6"
    assert format_mean_std(math.inf, math.nan) == "inf"


def test_bad_inputs_raise():
    with pytest.raises(InputError, match="both signal"):
        roc_auc(np.ones(4), np.arange(4.0))
    with pytest.raises(InputError, match="binary labels"):
        roc_curve(np.array([0, 1, 2]), np.arange(3.0))
    with pytest.raises(InputError, match="finite scores"):
        roc_auc(np.array([0, 1]), np.array([0.1, np.nan]))
    with pytest.raises(InputError, match="scores of shape"):
        accuracy(np.array([0, 1]), np.zeros(3))
