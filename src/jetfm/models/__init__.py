"""Backbone (transformer over particles) and prediction heads; tasks combine them with targets."""

from jetfm.models.backbone import Backbone, BackboneConfig
from jetfm.models.heads import (
    ClassAttentionClassifier,
    FlowMatchingHead,
    GeometricTokenHead,
    MeanPoolClassifier,
    NeighbourPrior,
    RegressionHead,
    ResidualCodeHead,
    TokenHead,
    class_probabilities,
    classification_loss,
    masked_mean,
)

__all__ = [
    "Backbone",
    "BackboneConfig",
    "ClassAttentionClassifier",
    "FlowMatchingHead",
    "GeometricTokenHead",
    "MeanPoolClassifier",
    "NeighbourPrior",
    "RegressionHead",
    "ResidualCodeHead",
    "TokenHead",
    "class_probabilities",
    "classification_loss",
    "masked_mean",
]
