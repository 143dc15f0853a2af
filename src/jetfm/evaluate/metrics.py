"""Classification metrics on plain NumPy arrays: accuracy, ROC AUC, ROC curves, background rejection,
CWoLa significance improvement, and mean ± std across seeds.

Nothing here knows about models or data files: callers pass true labels and scores, so the same
functions serve a classifier's test set, a CWoLa anomaly search, and a results table.

Conventions (used everywhere in jetfm's tables and plots):

* Signal efficiency ``eps_S`` = true positive rate, background efficiency ``eps_B`` = false positive
  rate, for the cut ``score >= threshold``. The ROC curve is scikit-learn's ``roc_curve`` with every
  threshold kept (``drop_intermediate=False``), starting at (0, 0).
* **Background rejection at a fixed signal efficiency** ``R(eps_S) = 1 / eps_B(eps_S)``, where
  ``eps_B(eps_S)`` is read off the piecewise-linear ROC curve: if some threshold gives exactly
  ``eps_S``, the lowest ``eps_B`` among those thresholds (the best cut with that efficiency); otherwise
  linear interpolation between the two neighbouring ROC points. With untied scores the ROC is a
  staircase, so this is the ``eps_B`` of the loosest cut that keeps less than ``eps_S`` of the signal;
  tied scores give diagonal segments, along which the interpolation is linear (a randomised cut).
  ``eps_B = 0`` gives ``R = inf`` (too few background jets to measure it: report the sample size).
  Papers quote R50 (eps_S = 0.5) and R30 (eps_S = 0.3).
* **Signal vs background in a multi-class classifier** (ParT, arXiv 2202.03772): keep jets whose true
  class is the signal or the background class and score them with ``p_s / (p_s + p_b)``.
* **CWoLa significance improvement** (arXiv 1805.02664): ``SI = eps_S / sqrt(eps_B)``, the factor by
  which a cut on the classifier multiplies the naive significance ``S / sqrt(B)``. Reported either at a
  fixed ``eps_B`` (``eps_S(eps_B)`` read off the ROC the same way as above, largest ``eps_S`` at a tie)
  or at the best cut: the maximum over ROC thresholds that keep at least ``min_background`` background
  jets (default 10), because a cut keeping one or two background jets has a huge, meaningless SI.
* **Across seeds**: mean and sample standard deviation (``ddof = 1``) of each metric; one seed gives
  std = 0 with ``n = 1`` recorded so that a table never hides how many runs went into a number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score as _sk_roc_auc
from sklearn.metrics import roc_curve as _sk_roc_curve

from jetfm.core.errors import InputError

DEFAULT_EFFICIENCIES: tuple[float, ...] = (0.5, 0.3)


def _labels_scores(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1:
        raise InputError("1-D labels (n,)", field="labels", found=f"shape {labels.shape}")
    if scores.ndim not in (1, 2) or scores.shape[0] != labels.shape[0]:
        raise InputError(
            f"scores of shape ({labels.shape[0]},) or ({labels.shape[0]}, C)",
            field="scores",
            found=f"shape {scores.shape}",
        )
    if not np.all(np.isfinite(scores)):
        raise InputError("finite scores", field="scores", found="NaN or inf")
    return labels, scores


def _binary(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = _labels_scores(labels, scores)
    if scores.ndim != 1:
        raise InputError("1-D signal scores (n,)", field="scores", found=f"shape {scores.shape}")
    values = set(np.unique(labels).tolist())
    if not values <= {0, 1}:
        raise InputError("binary labels in {0, 1}", field="labels", found=sorted(values))
    y = labels.astype(bool)
    if y.all() or not y.any():
        raise InputError(
            "both signal (1) and background (0) jets",
            field="labels",
            found=f"{int(y.sum())} signal, {int((~y).sum())} background",
        )
    return y, scores


def accuracy(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of correctly classified jets.

    ``scores`` (n,) are binary signal scores (predicted signal if ``score >= threshold``);
    ``scores`` (n, C) are per-class scores (predicted class = argmax).
    """
    labels, scores = _labels_scores(labels, scores)
    pred = (scores >= threshold).astype(np.int64) if scores.ndim == 1 else scores.argmax(axis=1)
    return float(np.mean(pred == labels))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve.

    Binary: ``scores`` (n,) with labels in {0, 1}. Multi-class: ``scores`` (n, C) and integer labels;
    the macro average over classes of the one-vs-rest AUC of ``scores[:, c]`` (classes with no jet in
    ``labels`` are skipped, since their AUC is undefined). Scores need not sum to one.
    """
    labels, scores = _labels_scores(labels, scores)
    if scores.ndim == 1:
        y, s = _binary(labels, scores)
        return float(_sk_roc_auc(y, s))
    aucs = []
    for c in range(scores.shape[1]):
        y = labels == c
        if y.any() and not y.all():
            aucs.append(_sk_roc_auc(y, scores[:, c]))
    if not aucs:
        raise InputError("at least two classes present", field="labels", found=np.unique(labels))
    return float(np.mean(aucs))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(eps_s, eps_b, thresholds)`` for binary labels (1 = signal), every threshold kept.

    Points are ordered by decreasing threshold, so ``eps_s`` and ``eps_b`` are non-decreasing; the first
    point is (0, 0) with threshold ``inf``.
    """
    y, s = _binary(labels, scores)
    fpr, tpr, thr = _sk_roc_curve(y, s, drop_intermediate=False)
    return tpr, fpr, thr


def _check_curve(eps_s: np.ndarray, eps_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    eps_s = np.asarray(eps_s, dtype=np.float64)
    eps_b = np.asarray(eps_b, dtype=np.float64)
    if eps_s.shape != eps_b.shape or eps_s.ndim != 1 or len(eps_s) < 2:
        raise InputError(
            "eps_s and eps_b of equal 1-D shape (>= 2 points)",
            field="roc",
            found=f"{eps_s.shape} and {eps_b.shape}",
        )
    if np.any(np.diff(eps_s) < 0) or np.any(np.diff(eps_b) < 0):
        raise InputError("non-decreasing eps_s and eps_b (a ROC curve)", field="roc")
    return eps_s, eps_b


def eps_b_at_eps_s(eps_s: np.ndarray, eps_b: np.ndarray, target: float) -> float:
    """Background efficiency at signal efficiency ``target`` on a ROC curve (module docstring)."""
    eps_s, eps_b = _check_curve(eps_s, eps_b)
    if not eps_s[0] <= target <= eps_s[-1]:
        raise InputError(f"target eps_S in [{eps_s[0]}, {eps_s[-1]}]", field="eps_s", found=target)
    i = int(np.searchsorted(eps_s, target, side="left"))  # first point with eps_s >= target
    if eps_s[i] == target:
        return float(eps_b[i])  # lowest eps_B among points at exactly this eps_S
    frac = (target - eps_s[i - 1]) / (eps_s[i] - eps_s[i - 1])
    return float(eps_b[i - 1] + frac * (eps_b[i] - eps_b[i - 1]))


def eps_s_at_eps_b(eps_s: np.ndarray, eps_b: np.ndarray, target: float) -> float:
    """Signal efficiency at background efficiency ``target`` (largest eps_S at a tie; else linear)."""
    eps_s, eps_b = _check_curve(eps_s, eps_b)
    if not eps_b[0] <= target <= eps_b[-1]:
        raise InputError(f"target eps_B in [{eps_b[0]}, {eps_b[-1]}]", field="eps_b", found=target)
    i = int(np.searchsorted(eps_b, target, side="right"))  # first point with eps_b > target
    if eps_b[i - 1] == target or i == len(eps_b):
        return float(eps_s[i - 1])  # highest eps_S among points at exactly this eps_B
    frac = (target - eps_b[i - 1]) / (eps_b[i] - eps_b[i - 1])
    return float(eps_s[i - 1] + frac * (eps_s[i] - eps_s[i - 1]))


def rejection_at(eps_s: np.ndarray, eps_b: np.ndarray, target: float) -> float:
    """Background rejection ``1 / eps_B`` at signal efficiency ``target`` (``inf`` if eps_B = 0)."""
    b = eps_b_at_eps_s(eps_s, eps_b, target)
    return math.inf if b == 0.0 else 1.0 / b


def background_rejection(
    labels: np.ndarray, scores: np.ndarray, efficiencies: Sequence[float] = DEFAULT_EFFICIENCIES
) -> dict[float, float]:
    """``{eps_S: 1 / eps_B}`` for binary labels and signal scores (default eps_S = 0.5 and 0.3)."""
    tpr, fpr, _ = roc_curve(labels, scores)
    return {float(e): rejection_at(tpr, fpr, e) for e in efficiencies}


def pair_scores(
    labels: np.ndarray, probs: np.ndarray, signal: int, background: int
) -> tuple[np.ndarray, np.ndarray]:
    """Binary (labels, scores) for signal class vs background class of a multi-class classifier.

    Keeps jets whose true class is ``signal`` or ``background``; score = p_s / (p_s + p_b) as in ParT
    (0.5 where both probabilities are 0). Returns labels in {0, 1} (1 = signal) and the scores.
    """
    labels, probs = _labels_scores(labels, probs)
    if probs.ndim != 2:
        raise InputError("per-class scores (n, C)", field="probs", found=f"shape {probs.shape}")
    n_classes = probs.shape[1]
    for name, c in (("signal", signal), ("background", background)):
        if not 0 <= c < n_classes:
            raise InputError(f"class index in [0, {n_classes})", field=name, found=c)
    if signal == background:
        raise InputError(
            "different signal and background classes", field="background", found=background
        )
    keep = (labels == signal) | (labels == background)
    ps, pb = probs[keep, signal], probs[keep, background]
    total = ps + pb
    score = np.divide(ps, total, out=np.full_like(ps, 0.5), where=total > 0)
    return (labels[keep] == signal).astype(np.int64), score


def classification_summary(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    signal: int | None = None,
    background: int | None = None,
    efficiencies: Sequence[float] = DEFAULT_EFFICIENCIES,
) -> dict[str, float]:
    """The numbers a results table wants: ``accuracy``, ``auc`` and ``rej_<100 eps_S>`` (e.g. rej_50).

    Binary scores (n,): everything on the binary problem. Multi-class scores (n, C): accuracy and
    macro one-vs-rest AUC on all classes; with ``signal``/``background`` given, also ``pair_auc`` and
    the rejections on the pair score p_s / (p_s + p_b).
    """
    labels, scores = _labels_scores(labels, scores)
    out = {"accuracy": accuracy(labels, scores), "auc": roc_auc(labels, scores)}
    if scores.ndim == 1:
        y, s = labels, scores
    elif signal is not None and background is not None:
        y, s = pair_scores(labels, scores, signal, background)
        out["pair_auc"] = roc_auc(y, s)
    else:
        return out
    for eff, rej in background_rejection(y, s, efficiencies).items():
        out[f"rej_{round(100 * eff)}"] = rej
    return out


def significance_improvement(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    eps_b: float | None = None,
    min_background: int = 10,
) -> dict[str, float]:
    """CWoLa significance improvement ``SI = eps_S / sqrt(eps_B)`` (see module docstring).

    With ``eps_b`` given: SI at that background efficiency. Otherwise: the best SI over cuts that keep
    at least ``min_background`` background jets. Returns ``{"si", "eps_s", "eps_b", "threshold"}``
    (``threshold`` is NaN when eps_b is given and falls between two cuts).
    """
    tpr, fpr, thr = roc_curve(labels, scores)
    if eps_b is not None:
        if not 0.0 < eps_b <= 1.0:
            raise InputError("eps_b in (0, 1]", field="eps_b", found=eps_b)
        s = eps_s_at_eps_b(tpr, fpr, eps_b)
        hit = np.flatnonzero(fpr == eps_b)
        t = float(thr[hit[-1]]) if len(hit) else math.nan
        return {"si": s / math.sqrt(eps_b), "eps_s": s, "eps_b": float(eps_b), "threshold": t}
    n_bkg = int((np.asarray(labels) == 0).sum())
    ok = fpr * n_bkg >= min_background - 1e-9
    if not ok.any():
        raise InputError(
            f"at least min_background={min_background} background jets",
            field="labels",
            found=n_bkg,
        )
    si = np.where(ok, tpr / np.sqrt(np.where(ok, fpr, 1.0)), -np.inf)
    i = int(np.argmax(si))
    return {
        "si": float(si[i]),
        "eps_s": float(tpr[i]),
        "eps_b": float(fpr[i]),
        "threshold": float(thr[i]),
    }


def aggregate_seeds(
    results: Sequence[Mapping[str, float]],
) -> dict[str, dict[str, float]]:
    """Mean and sample std (ddof = 1; 0 for a single seed) of each metric over runs with different seeds.

    ``results`` is one ``{metric: value}`` per seed; every run must report the same metrics. Returns
    ``{metric: {"mean", "std", "n"}}``. An infinite value (e.g. a rejection with eps_B = 0) makes the
    mean inf and the std NaN, which is what the reader should see.
    """
    if not results:
        raise InputError("at least one run", field="results", found="empty list")
    keys = list(results[0])
    for i, r in enumerate(results):
        if set(r) != set(keys):
            raise InputError(f"the metrics {sorted(keys)}", field=f"results[{i}]", found=sorted(r))
    out: dict[str, dict[str, float]] = {}
    for k in keys:
        v = np.array([float(r[k]) for r in results])
        with np.errstate(invalid="ignore"):
            std = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
        out[k] = {"mean": float(np.mean(v)), "std": std, "n": len(v)}
    return out


def format_mean_std(mean: float, std: float, digits: int = 2) -> str:
    """``"mean ± std"`` rounded to ``digits`` significant digits of the std (for tables and reports)."""
    if not math.isfinite(mean):
        return str(mean)
    if math.isnan(std):
        return f"{mean:.4g} ± nan"
    if std <= 0 or math.isinf(std):
        return f"{mean:.4g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(std)))
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"
