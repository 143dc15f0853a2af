"""Inference with a fine-tuned classifier: per-jet scores for a store, metrics, ONNX export.

* :func:`score` - class probabilities of labelled jets in memory (a test set built once and
  reused by the sweep and the CWoLa study);
* :func:`predict` - scores every jet of a store split into one HDF5 file (``scores`` (n, C),
  ``label`` in the classifier's classes or -1, the store's own label, jet kinematics) with the
  class names and provenance in its attributes;
* :func:`export_classifier` - an ONNX file of the tagger (inputs ``x`` (B, N, F) standardised with
  the classifier's ``preprocessing.json``, ``mask`` (B, N) bool; outputs ``logits`` and ``probs``),
  checked against PyTorch with onnxruntime.

Shapes: B jets, N particles, F features, C classes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from jetfm.core.atomic import atomic_path
from jetfm.core.checkpoint import load_checkpoint
from jetfm.core.errors import InputError
from jetfm.data.features import Preprocessing
from jetfm.data.loader import LoaderConfig, make_dataloader
from jetfm.data.store import Store
from jetfm.evaluate.metrics import classification_summary
from jetfm.models.export import check_onnx, export_onnx
from jetfm.tasks.classify import ClassifierScores, ClassifyTask, classifier_dir, load_classifier
from jetfm.train.finetune import InMemoryJets, LabelledJets


def classifier_preprocessing(path: str | os.PathLike[str]) -> Preprocessing:
    """The standardisation a classifier expects its inputs in (from its checkpoint folder)."""
    folder = classifier_dir(path)
    ckpt = load_checkpoint(folder)
    if ckpt.preprocessing is None:
        raise InputError("a classifier with preprocessing.json", file=folder, found="missing")
    return Preprocessing.from_dict(ckpt.preprocessing, source=str(folder / "preprocessing.json"))


@torch.no_grad()
def score(
    task: ClassifyTask,
    data: LabelledJets,
    pre: Preprocessing,
    *,
    batch_size: int = 512,
    max_particles: int | None = None,
) -> np.ndarray:
    """Class probabilities (n, C) of ``data`` in its order (binary: [p0, p1])."""
    maxp = max_particles or pre.max_particles
    loader = InMemoryJets(data, pre, batch_size, maxp, shuffle=False, drop_last=False)
    task = task.eval()
    dev = next(task.parameters()).device
    out = [
        task.predict_proba(b["x"].to(dev), b["mask"].to(dev)).float().cpu().numpy()
        for b in loader()
    ]
    return np.concatenate(out) if out else np.zeros((0, task.config.n_classes), np.float32)


def evaluate_scores(
    labels: np.ndarray,
    probs: np.ndarray,
    *,
    signal: int | None = None,
    background: int | None = None,
) -> dict[str, float]:
    """Accuracy, AUC and 1/eps_B at eps_S = 0.5 and 0.3 (``rej_50``, ``rej_30``).

    Binary: on p(class 1). Multi-class: accuracy + macro AUC, and the rejections of ``signal`` vs
    ``background`` (default: last class vs class 0, e.g. top vs QCD) on p_s / (p_s + p_b).
    """
    if probs.shape[1] == 2:
        return classification_summary(labels, probs[:, 1])
    s = probs.shape[1] - 1 if signal is None else signal
    b = 0 if background is None else background
    return classification_summary(labels, probs, signal=s, background=b)


@dataclass
class PredictConfig:
    """Options of :func:`predict` (for the CLI)."""

    batch_size: int = 512
    max_particles: int | None = None  # default: the classifier's preprocessing max_particles


def predict(
    classifier: str | os.PathLike[str],
    store: str | os.PathLike[str],
    split: str = "test",
    output: str | os.PathLike[str] | None = None,
    config: PredictConfig | None = None,
) -> Path:
    """Score every jet of ``store``/``split`` with a classifier; returns the HDF5 file written.

    The file (default ``<classifier run>/predictions/<store name>-<split>.h5``) holds ``scores``
    (n, C) float32, ``label`` (n,) the jet's class index among the classifier's classes (-1 if its
    store class is not one of them), ``store_label`` (n,), and ``jet_pt``/``jet_eta``/``jet_mass``;
    attributes hold JSON: classes, store classes, classifier and store hashes, metrics (if the
    labels allow). Jets are in store order.
    """
    cfg = config or PredictConfig()
    folder = classifier_dir(classifier)
    task = load_classifier(folder)
    pre = classifier_preprocessing(folder)
    st = Store(store)
    names = list(task.config.class_names) or [str(i) for i in range(task.config.n_classes)]
    # a store with other classes (e.g. real data) is still scored; unknown classes get label -1
    mapping = np.array([names.index(c) if c in names else -1 for c in st.classes], dtype=np.int64)
    maxp = cfg.max_particles or pre.max_particles
    loader_cfg = LoaderConfig(
        batch_size=cfg.batch_size,
        max_particles=maxp,
        shuffle=False,
        bucketing=False,
        drop_last=False,
    )
    scores, store_labels, jets = [], [], []
    with torch.no_grad():
        for b in make_dataloader(st.root, split, pre, loader_cfg):
            scores.append(task.predict_proba(b["x"], b["mask"]).float().numpy())
            store_labels.append(b["label"].numpy())
            jets.append(b["jet"].numpy())
    if not scores:
        raise InputError("jets in the split", file=st.root, field="split", found=split)
    probs = np.concatenate(scores)
    slab = np.concatenate(store_labels)
    jet = np.concatenate(jets)
    label = mapping[slab]
    metrics: dict[str, Any] = {}
    known = label >= 0
    if known.any() and len(np.unique(label[known])) == task.config.n_classes:
        metrics = evaluate_scores(label[known], probs[known])
    run_root = folder.parent.parent if folder.parent.name == "classifier" else folder.parent
    out = (
        Path(output)
        if output is not None
        else (run_root / "predictions" / f"{st.root.name}-{split}.h5")
    )
    ckpt_meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("scores", data=probs.astype(np.float32))
        f.create_dataset("label", data=label)
        f.create_dataset("store_label", data=slab)
        for i, k in ((0, "jet_pt"), (1, "jet_eta"), (3, "jet_mass")):
            f.create_dataset(k, data=jet[:, i])
        f.attrs["classes"] = json.dumps(names)
        f.attrs["store_classes"] = json.dumps(st.classes)
        f.attrs["classifier"] = str(folder)
        f.attrs["classifier_hash"] = str(ckpt_meta.get("content_hash"))
        f.attrs["store"] = str(st.root)
        f.attrs["store_hash"] = st.content_hash
        f.attrs["split"] = split
        f.attrs["metrics"] = json.dumps(metrics)
    return out


def export_classifier(
    classifier: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    opset: int = 17,
    atol: float = 1e-4,
) -> Path:
    """Export a fine-tuned tagger to ONNX (dynamic batch and particle axes) and check it.

    Inputs: ``x`` (B, N, F) float32 standardised as in the classifier's ``preprocessing.json`` (a
    copy is written beside the ONNX file as ``<name>.preprocessing.json``), ``mask`` (B, N) bool.
    Outputs: ``logits`` (B, C') and ``probs`` (B, n_classes). Only feature-input backbones export
    (a token backbone's tokenizer runs data-dependent Python loops).
    """
    task = load_classifier(classifier)
    if task.config.sequence != "set":
        raise InputError(
            "a classifier on a feature-input backbone (token backbones do not export to ONNX)",
            file=classifier_dir(classifier),
            field="sequence",
            found=task.config.sequence,
        )
    model = ClassifierScores(task).eval()
    n_features = task.config.backbone.n_features
    out = export_onnx(model, path, n_features=n_features, opset=opset)
    check_onnx(model, out, n_features=n_features, atol=atol)
    classifier_preprocessing(classifier).save(out.with_suffix(".preprocessing.json"))
    return out
