"""How much physics survives tokenization: resolution, distribution distances, codebook use, a classifier.

:func:`evaluate_tokenizer` encodes and decodes a labelled sample and compares decoded jets with the
originals at three levels:

1. particle features (standardised and physical units): resolution = decoded - original per real
   particle (mean = bias, std, robust 68% half-width) and the Wasserstein-1 distance between the
   feature distributions;
2. jets, after mapping features back to physical particles (massless, via the tokenizer's saved
   preprocessing and the jet axis): mass, pT, tau21, tau32 (N-subjettiness, beta = 1) and
   multiplicity; relative resolution for mass and pT, absolute for the tau ratios, and W1;
   both original and decoded jets go through the same feature -> particle mapping, so the numbers
   isolate the tokenization error;
3. codebook: used fraction, perplexity, token frequencies;
4. a classifier test: the same gradient-boosted classifier (scikit-learn's histogram GBDT on jet
   observables plus particle summaries) is trained and tested on original jets and, with the same
   split and seed, on tokenized-then-decoded jets; the AUC ratio decoded/original says how much
   class information the tokens keep. It is fast and has no knobs to tune per sample, so the
   comparison is fair; it is not a state-of-the-art tagger.

Numbers only (numpy/torch/scipy/sklearn); plots live in :mod:`jetfm.evaluate.tokenizer_plots`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from jetfm.core.atomic import write_json_atomic
from jetfm.core.errors import InputError

JET_OBSERVABLES = ("mass", "pt", "tau21", "tau32", "n_particles")
#: how each jet observable's resolution is measured: relative ((dec - orig) / orig) or absolute
RELATIVE = {"mass": True, "pt": True, "tau21": False, "tau32": False, "n_particles": False}


@dataclass
class QualityResult:
    """``summary``: JSON-ready numbers; ``arrays``: per-particle/per-jet arrays for plots."""

    summary: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        write_json_atomic(path, self.summary)
        return Path(path)

    def to_markdown(self) -> str:
        return quality_markdown(self.summary)


# ---- building blocks ------------------------------------------------------------------------------
def residual_stats(
    orig: np.ndarray, dec: np.ndarray, *, relative: bool = False
) -> dict[str, float]:
    """Resolution of ``dec`` against ``orig`` (1-d arrays, same length) and W1 of their distributions.

    ``relative``: residual = (dec - orig) / orig (entries with orig == 0 are skipped).
    """
    orig = np.asarray(orig, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    if orig.shape != dec.shape or orig.ndim != 1:
        raise InputError(
            "two 1-d arrays of equal length", field="orig/dec", found=(orig.shape, dec.shape)
        )
    if relative:
        ok = orig != 0
        res = (dec[ok] - orig[ok]) / orig[ok]
    else:
        res = dec - orig
    if res.size == 0:
        return {
            "bias": float("nan"),
            "std": float("nan"),
            "half_width_68": float("nan"),
            "w1": float("nan"),
        }
    q16, q84 = np.percentile(res, [16, 84])
    return {
        "bias": float(res.mean()),
        "std": float(res.std()),
        "half_width_68": float((q84 - q16) / 2),
        "w1": float(wasserstein_distance(orig, dec)),
    }


def codebook_stats(ids: np.ndarray | torch.Tensor, codebook_size: int) -> dict[str, Any]:
    """Used fraction, perplexity (exp entropy) and normalised perplexity of the token ids >= 0."""
    ids = ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    ids = ids[ids >= 0].astype(np.int64)
    if ids.size and ids.max() >= codebook_size:
        raise InputError(f"ids < {codebook_size}", field="ids", found=int(ids.max()))
    counts = np.bincount(ids, minlength=codebook_size)
    p = counts / max(1, counts.sum())
    nz = p[p > 0]
    ppl = float(np.exp(-(nz * np.log(nz)).sum())) if nz.size else 0.0
    return {
        "codebook_size": int(codebook_size),
        "n_tokens": int(counts.sum()),
        "n_used": int((counts > 0).sum()),
        "used_fraction": float((counts > 0).mean()),
        "perplexity": ppl,
        "normalised_perplexity": ppl / codebook_size,
        "counts": counts,
    }


def physical_particles(
    x: np.ndarray,
    mask: np.ndarray,
    jet: np.ndarray,
    preprocessing: Any,
) -> dict[str, np.ndarray]:
    """Standardised padded features (B, N, F) -> flat physical particles (px, py, pz, energy, offsets).

    ``jet`` (B, >= 3) holds the jet pT, eta, phi (the loader's ``jet`` columns); ``preprocessing`` is
    a :class:`jetfm.data.features.Preprocessing`.
    """
    from jetfm.data.features import features_to_kinematics
    from jetfm.physics.kinematics import ptetaphi_to_pxpypz

    x_phys = preprocessing.inverse_transform(np.asarray(x, dtype=np.float64))
    kin = features_to_kinematics(
        x_phys, preprocessing.feature_names, jet[:, 0:1], jet[:, 1:2], jet[:, 2:3]
    )
    m = np.asarray(mask, dtype=bool)
    pt, eta, phi = kin["pt"][m], kin["eta"][m], kin["phi"][m]
    px, py, pz = ptetaphi_to_pxpypz(pt, eta, phi)
    counts = m.sum(axis=1)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return {"px": px, "py": py, "pz": pz, "energy": kin["energy"][m], "pt": pt, "offsets": offsets}


def jet_observables(
    x: np.ndarray, mask: np.ndarray, jet: np.ndarray, preprocessing: Any, *, R: float = 0.8
) -> dict[str, np.ndarray]:
    """Mass, pT, tau21, tau32, multiplicity per jet (B,) from standardised padded features."""
    from jetfm.physics.jets import jet_four_momentum
    from jetfm.physics.observables import nsubjettiness

    p = physical_particles(x, mask, jet, preprocessing)
    four = jet_four_momentum(p["px"], p["py"], p["pz"], p["energy"], p["offsets"])
    taus = nsubjettiness(p["px"], p["py"], p["pz"], p["energy"], p["offsets"], n_max=3, R=R)
    return {
        "mass": four["mass"],
        "pt": four["pt"],
        "tau21": taus["tau21"],
        "tau32": taus["tau32"],
        "n_particles": np.diff(p["offsets"]).astype(np.float64),
    }


def classifier_features(
    x: np.ndarray, mask: np.ndarray, obs: dict[str, np.ndarray], feature_names: tuple[str, ...]
) -> np.ndarray:
    """Per-jet inputs of the classifier test: jet observables + mean/std/leading-3 of each feature."""
    m = np.asarray(mask, dtype=bool)
    cnt = np.maximum(m.sum(axis=1), 1)[:, None]  # (B, 1)
    xm = np.where(m[..., None], x, 0.0)  # (B, N, F)
    mean = xm.sum(axis=1) / cnt
    std = np.sqrt(np.maximum((np.where(m[..., None], x, 0.0) ** 2).sum(axis=1) / cnt - mean**2, 0))
    lead = []
    for k in range(3):  # features of the first three (highest-pT) particles, NaN when absent
        col = x[:, k, :] if x.shape[1] > k else np.full((x.shape[0], x.shape[2]), np.nan)
        has = m[:, k] if m.shape[1] > k else np.zeros(x.shape[0], dtype=bool)
        lead.append(np.where(has[:, None], col, np.nan))
    cols = [obs[k][:, None] for k in JET_OBSERVABLES] + [mean, std, *lead]
    return np.concatenate(cols, axis=1).astype(np.float64)


def classifier_auc(
    feats: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    seed: int = 0,
) -> float:
    """Train scikit-learn's HistGradientBoostingClassifier on ``train_idx``; ROC AUC on ``test_idx``.

    Binary labels give the usual AUC; more classes give the one-vs-rest macro average.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=seed)
    clf.fit(feats[train_idx], labels[train_idx])
    proba = clf.predict_proba(feats[test_idx])
    y = labels[test_idx]
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    return float(roc_auc_score(y, proba, multi_class="ovr", labels=clf.classes_))


# ---- the whole evaluation -------------------------------------------------------------------------
def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def evaluate_tokenizer(
    tokenizer: Any,
    data: dict[str, Any],
    preprocessing: Any = None,
    *,
    R: float = 0.8,
    classifier: bool = True,
    seed: int = 0,
    max_jets: int | None = None,
) -> QualityResult:
    """Encode + decode ``data`` (padded dict: ``x``, ``mask``, and for jet-level numbers ``jet``
    (B, 5: pt, eta, phi, mass, energy); for the classifier test ``label``) and measure what survives.

    ``preprocessing`` defaults to the one saved with the tokenizer; without any, only the standardised
    feature-level numbers and the codebook statistics are computed.
    """
    for key in ("x", "mask"):
        if key not in data:
            raise InputError("a padded batch dict", field=f"data.{key}", found="missing")
    x = torch.as_tensor(data["x"], dtype=torch.float32)
    mask = torch.as_tensor(data["mask"]).bool()
    sel = slice(None) if max_jets is None else slice(0, max_jets)
    x, mask = x[sel], mask[sel]
    if preprocessing is None and getattr(tokenizer, "preprocessing", None) is not None:
        preprocessing = tokenizer.preprocessing_object()
    elif isinstance(preprocessing, dict):
        from jetfm.data.features import Preprocessing

        preprocessing = Preprocessing.from_dict(preprocessing)
    names = tuple(tokenizer.config.feature_names)

    ids = tokenizer.encode(x, mask)
    dec = tokenizer.decode(ids, mask)
    xn, dn, mn = _np(x).astype(np.float64), _np(dec).astype(np.float64), _np(mask)
    cb = codebook_stats(ids, tokenizer.codebook_size)
    counts = cb.pop("counts")
    summary: dict[str, Any] = {
        "tokenizer": {
            "type": tokenizer.config.type,
            "codebook_size": tokenizer.codebook_size,
            "content_hash": getattr(tokenizer, "content_hash", None),
        },
        "n_jets": int(x.shape[0]),
        "n_particles": int(mn.sum()),
        "codebook": cb,
        "features_standardised": {},
    }
    arrays: dict[str, np.ndarray] = {"token_counts": counts}
    for i, n in enumerate(names):
        o, d = xn[..., i][mn], dn[..., i][mn]
        summary["features_standardised"][n] = residual_stats(o, d)
        arrays[f"feature_orig_{n}"], arrays[f"feature_dec_{n}"] = o, d
    if preprocessing is not None:
        xp, dp = preprocessing.inverse_transform(xn), preprocessing.inverse_transform(dn)
        summary["features_physical"] = {
            n: residual_stats(xp[..., i][mn], dp[..., i][mn]) for i, n in enumerate(names)
        }
    if preprocessing is not None and "jet" in data:
        jet = _np(data["jet"])[sel].astype(np.float64)
        o_obs = jet_observables(xn, mn, jet, preprocessing, R=R)
        d_obs = jet_observables(dn, mn, jet, preprocessing, R=R)
        summary["jets"] = {
            k: {**residual_stats(o_obs[k], d_obs[k], relative=RELATIVE[k]), "relative": RELATIVE[k]}
            for k in JET_OBSERVABLES
        }
        for k in JET_OBSERVABLES:
            arrays[f"jet_orig_{k}"], arrays[f"jet_dec_{k}"] = o_obs[k], d_obs[k]
        if classifier and "label" in data:
            labels = _np(data["label"])[sel].astype(np.int64)
            if len(np.unique(labels)) >= 2:
                rng = np.random.default_rng(seed)
                perm = rng.permutation(len(labels))
                half = len(perm) // 2
                tr, te = perm[:half], perm[half:]
                f_o = classifier_features(xn, mn, o_obs, names)
                f_d = classifier_features(dn, mn, d_obs, names)
                auc_o = classifier_auc(f_o, labels, tr, te, seed)
                auc_d = classifier_auc(f_d, labels, tr, te, seed)
                summary["classifier"] = {
                    "model": "sklearn HistGradientBoostingClassifier(max_iter=200) on jet observables"
                    " + per-feature mean/std/leading-3",
                    "n_train": int(half),
                    "n_test": len(te),
                    "auc_original": auc_o,
                    "auc_decoded": auc_d,
                    "auc_ratio": auc_d / auc_o if auc_o > 0 else float("nan"),
                }
    return QualityResult(summary=summary, arrays=arrays)


def quality_markdown(summary: dict[str, Any]) -> str:
    """A Markdown report of :func:`evaluate_tokenizer`'s summary."""
    t = summary.get("tokenizer", {})
    cb = summary.get("codebook", {})
    lines = [
        f"### Tokenizer quality: {t.get('type')} (codebook {t.get('codebook_size')})",
        "",
        f"{summary.get('n_jets')} jets, {summary.get('n_particles')} particles. Codebook: "
        f"{cb.get('n_used')} of {cb.get('codebook_size')} codes used "
        f"({100 * cb.get('used_fraction', 0):.1f}%), perplexity {cb.get('perplexity', 0):.1f}.",
        "",
    ]
    for key, title in (
        ("features_standardised", "Particle features (standardised)"),
        ("features_physical", "Particle features (physical units)"),
        ("jets", "Jet observables (mass, pt: relative resolution; others: absolute)"),
    ):
        if key not in summary:
            continue
        lines += [
            f"**{title}**",
            "",
            "| quantity | bias | std | 68% half-width | W1 |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, s in summary[key].items():
            lines.append(
                f"| {name} | {s['bias']:.4g} | {s['std']:.4g} | {s['half_width_68']:.4g} | {s['w1']:.4g} |"
            )
        lines.append("")
    if "classifier" in summary:
        c = summary["classifier"]
        lines += [
            "**Classifier test** ("
            + c["model"]
            + f"; {c['n_train']} train / {c['n_test']} test jets)",
            "",
            "| AUC original | AUC decoded | ratio |",
            "|---:|---:|---:|",
            f"| {c['auc_original']:.4f} | {c['auc_decoded']:.4f} | {c['auc_ratio']:.4f} |",
            "",
        ]
    return "\n".join(lines)


def load_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a summary written by :meth:`QualityResult.to_json`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
