"""Token ids -> physical jets, the one path that generated and tokenized-then-decoded jets share.

Pipeline of :func:`decode_to_jets`::

    token ids (B, N) + mask --tokenizer.decode--> standardised features
      --Preprocessing.inverse_transform--> physical features (deta, dphi, log pT, ...)
      --features_to_kinematics--> massless particles (pT, eta, phi, E)
      --jets_from_particles--> a validated JetBatch, jet fields recomputed from the constituents

**Jet axis of a generated jet.** The model's features are relative to the jet axis (``deta``,
``dphi``), so a generated jet has no absolute direction. Its particles are placed around
``eta = 0, phi = 0`` (the frame in which the model's features live; with ``log_pt`` the pT scale is
absolute). The stored jet fields (pt, eta, phi, mass, energy, tau21, tau32) are then *recomputed*
from the constituents (E-scheme sum, as for a clustered jet), so the stored axis is close to, but
not exactly, (0, 0): every downstream command treats generated jets exactly like simulated ones,
and any imbalance of the generated particles around the axis shows up in the metrics instead of
being hidden. Mass, pT, tau ratios and EFPs do not depend on the choice of frame (massless
particles: a shift in eta is a longitudinal boost). Particles are massless and stored pT-descending.

Shapes: B jets, N particles, F features.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jetfm.core.errors import InputError
from jetfm.data.features import Preprocessing, compute_features, features_to_kinematics
from jetfm.data.schema import JetBatch
from jetfm.physics.jets import jet_four_momentum
from jetfm.physics.kinematics import ptetaphi_to_pxpypz, wrap_phi
from jetfm.physics.observables import nsubjettiness


def resolve_preprocessing(
    tokenizer: Any,
    explicit: Preprocessing | dict[str, Any] | None = None,
    fallback: dict[str, Any] | None = None,
) -> Preprocessing:
    """The standardisation that maps a tokenizer's decoded features to physical units.

    ``explicit`` wins; else the tokenizer's own (saved in its folder, the space its decoder speaks);
    else ``fallback`` (e.g. the model checkpoint's preprocessing.json).
    """
    pre = explicit
    if pre is None:
        pre = getattr(tokenizer, "preprocessing", None) or fallback
    if pre is None:
        raise InputError(
            "a tokenizer saved with its preprocessing.json (to map tokens back to physical units)",
            field="preprocessing",
            found="none",
        )
    return pre if isinstance(pre, Preprocessing) else Preprocessing.from_dict(pre)


def _pid_from_features(x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Charge and a representative PDG id from decoded ``charge`` + type-flag features (flat (M, F)).

    The flag with the largest decoded value wins: charged hadron -> pi+-, neutral hadron -> K_L,
    photon, electron, muon (sign from the decoded charge; a charged type never gets charge 0).
    """
    from jetfm.physics.particles import PARTICLE_TYPES

    kind = np.argmax(np.stack([x[:, names.index(f)] for f in PARTICLE_TYPES], axis=1), axis=1)
    sign = np.where(x[:, names.index("charge")] < 0, -1, 1)
    pid = np.select(
        [kind == 0, kind == 1, kind == 2, kind == 3, kind == 4],
        [211 * sign, np.full_like(sign, 130), np.full_like(sign, 22), -11 * sign, -13 * sign],
    )
    charge = np.where(np.isin(kind, (1, 2)), 0, sign)
    return {"pid": pid.astype(np.int32), "charge": charge.astype(np.int8)}


def jets_from_particles(
    pt: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    mask: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    extra: dict[str, np.ndarray] | None = None,
    jet_radius: float = 0.8,
) -> JetBatch:
    """Padded massless particles (B, N) -> a validated :class:`JetBatch` with recomputed jet fields.

    Particles are sorted by decreasing pT within each jet; ``extra`` holds further padded particle
    fields (B, N) (charge, pid, d0, dz). Jet pt/eta/phi/mass/energy are the E-scheme constituent
    sum, tau21/tau32 N-subjettiness with radius ``jet_radius``. Every jet needs a real particle.
    """
    m = np.asarray(mask, dtype=bool)
    B = m.shape[0]
    counts = m.sum(axis=1)
    if np.any(counts == 0):
        raise InputError(
            "at least one particle per jet", field="mask", found=f"{int((counts == 0).sum())} empty"
        )
    jet_idx = np.repeat(np.arange(B), counts)
    flat = {"pt": np.asarray(pt, np.float64)[m], "eta": np.asarray(eta, np.float64)[m]}
    flat["phi"] = wrap_phi(np.asarray(phi, np.float64)[m])
    for k, v in (extra or {}).items():
        flat[k] = np.asarray(v)[m]
    order = np.lexsort((-flat["pt"], jet_idx))  # by jet, then pT descending
    flat = {k: v[order] for k, v in flat.items()}
    px, py, pz = ptetaphi_to_pxpypz(flat["pt"], flat["eta"], flat["phi"])
    energy = flat["pt"] * np.cosh(flat["eta"])  # massless
    offsets = np.zeros(B + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    particles = {"px": px, "py": py, "pz": pz, "energy": energy, **flat}
    four = jet_four_momentum(px, py, pz, energy, offsets)
    taus = nsubjettiness(px, py, pz, energy, offsets, n_max=3, R=jet_radius)
    jets = {k: four[k] for k in ("pt", "eta", "phi", "mass", "energy")}
    jets["n_particles"] = counts
    jets["label"] = np.zeros(B, np.int32) if labels is None else np.asarray(labels)
    jets["tau21"], jets["tau32"] = taus["tau21"], taus["tau32"]
    return JetBatch(offsets=offsets, particles=particles, jets=jets).cast().validate("<generated>")


def decode_to_jets(
    ids: Tensor,
    mask: Tensor,
    tokenizer: Any,
    preprocessing: Preprocessing | dict[str, Any] | None = None,
    *,
    labels: np.ndarray | None = None,
    jet_radius: float = 0.8,
    pt_scale: np.ndarray | None = None,
) -> JetBatch:
    """Token ids (B, N) + mask -> physical jets (see the module docstring for the jet axis).

    ``tokenizer.decode`` gives standardised features, ``preprocessing`` (default: the tokenizer's
    own) maps them back to physical units, :func:`features_to_kinematics` to (pT, eta, phi, E)
    around eta = phi = 0. With the ``full`` feature set, charge, a representative PDG id and the
    impact parameters are decoded as well. ``pt_scale`` (B,) multiplies each jet's particle pT
    (consistent sampling's fit of the jet pT to its drawn bin).
    """
    pre = resolve_preprocessing(tokenizer, preprocessing)
    names = list(pre.feature_names)
    if "log_pt" not in names:
        raise InputError(
            "tokenizer features including 'log_pt' (a generated jet has no pT to scale pT_rel by)",
            field="feature_names",
            found=names,
        )
    mask = mask.to(torch.bool)
    x = tokenizer.decode(ids.masked_fill(~mask, -1), mask)  # (B, N, F)
    x_phys = pre.inverse_transform(x.detach().cpu().numpy().astype(np.float64))
    zeros = np.zeros((x_phys.shape[0], 1))
    kin = features_to_kinematics(x_phys, names, zeros, zeros, zeros)
    m = mask.cpu().numpy()
    extra: dict[str, np.ndarray] = {}
    from jetfm.physics.particles import PARTICLE_TYPES

    if "charge" in names and all(f in names for f in PARTICLE_TYPES):
        flat = x_phys.reshape(-1, len(names))
        extra = {k: v.reshape(m.shape) for k, v in _pid_from_features(flat, names).items()}
        for ip in ("d0", "dz"):
            if f"tanh_{ip}" in names:
                t = np.clip(x_phys[..., names.index(f"tanh_{ip}")], -0.999999, 0.999999)
                extra[ip] = np.where(extra["charge"] != 0, np.arctanh(t), 0.0).astype(np.float32)
    pt = kin["pt"] if pt_scale is None else kin["pt"] * np.asarray(pt_scale, np.float64)[:, None]
    return jets_from_particles(
        pt, kin["eta"], kin["phi"], m, labels=labels, extra=extra, jet_radius=jet_radius
    )


def tokenize_and_decode(
    batch: JetBatch,
    tokenizer: Any,
    preprocessing: Preprocessing | dict[str, Any] | None = None,
    *,
    max_particles: int | None = None,
    jet_radius: float = 0.8,
    chunk: int = 4096,
) -> JetBatch:
    """Reference jets -> tokens -> decoded jets, through the same decoding path as generated jets.

    Jets keep their ``max_particles`` highest-pT particles (default: the preprocessing's), as the
    token model saw them in training. The result is what a perfect token model would generate.
    """
    pre = resolve_preprocessing(tokenizer, preprocessing)
    n_max = pre.max_particles if max_particles is None else int(max_particles)
    parts = []
    for rows, xt, mt in padded_chunks(batch, pre, n_max, chunk):
        ids = tokenizer.encode(xt, mt)
        labels = batch.jets["label"][rows]
        parts.append(decode_to_jets(ids, mt, tokenizer, pre, labels=labels, jet_radius=jet_radius))
    return JetBatch.concatenate(parts)


def padded_chunks(
    batch: JetBatch, pre: Preprocessing, n_max: int, chunk: int
) -> Iterator[tuple[slice, Tensor, Tensor]]:
    """A batch's standardised features in padded chunks of ``chunk`` jets: (jet rows, features
    (b, n_max, F) float32, mask (b, n_max)), each jet's leading ``n_max`` particles."""
    from jetfm.evaluate.generative import jagged_to_padded

    feats = pre.transform(compute_features(batch, pre.feature_names).astype(np.float64))
    for s in range(0, batch.n_jets, chunk):
        sub = batch.offsets[s : min(s + chunk, batch.n_jets) + 1]
        x, m = jagged_to_padded(feats[sub[0] : sub[-1]], sub - sub[0], n_max)
        yield (
            slice(s, s + len(sub) - 1),
            torch.as_tensor(x, dtype=torch.float32),
            torch.as_tensor(m),
        )
