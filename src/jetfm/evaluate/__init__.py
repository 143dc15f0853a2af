"""Evaluation: classification metrics, generative metrics with truth floors, plots, static HTML report.

Metrics and plots work on plain NumPy arrays, so they can score any model's outputs (or numbers read
from a paper) without importing models or data code. Plots (:mod:`jetfm.evaluate.plots`) and the HTML
report (:mod:`jetfm.evaluate.report`) are imported from their modules, so that importing metrics
does not pull in matplotlib.
"""

from jetfm.evaluate.generative import (
    JET_OBSERVABLES,
    JetSample,
    compare_with_floor,
    default_metrics,
    evaluate_samples,
    fpd,
    frechet_distance,
    jet_sample_from_batch,
    jetnet_efp_features,
    kl_quantile,
    kl_quantile_error,
    kl_quantile_table,
    kpd,
    mmd2_poly_unbiased,
    truth_floor,
    w1_batched,
    w1efp,
    w1m,
    w1p,
)
from jetfm.evaluate.metrics import (
    accuracy,
    aggregate_seeds,
    background_rejection,
    classification_summary,
    pair_scores,
    rejection_at,
    roc_auc,
    roc_curve,
    significance_improvement,
)

__all__ = [
    "JET_OBSERVABLES",
    "JetSample",
    "accuracy",
    "aggregate_seeds",
    "background_rejection",
    "classification_summary",
    "compare_with_floor",
    "default_metrics",
    "evaluate_samples",
    "fpd",
    "frechet_distance",
    "jet_sample_from_batch",
    "jetnet_efp_features",
    "kl_quantile",
    "kl_quantile_error",
    "kl_quantile_table",
    "kpd",
    "mmd2_poly_unbiased",
    "pair_scores",
    "rejection_at",
    "roc_auc",
    "roc_curve",
    "significance_improvement",
    "truth_floor",
    "w1_batched",
    "w1efp",
    "w1m",
    "w1p",
]
