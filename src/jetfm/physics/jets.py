"""Jet-level sums over jagged constituents (flat particle arrays + offsets)."""

from __future__ import annotations

import numpy as np

from jetfm.physics.kinematics import invariant_mass, pxpypz_to_ptetaphi


def segment_sum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of ``values`` over each jet's slice [offsets[i], offsets[i+1]); empty jets give 0."""
    values = np.asarray(values, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.int64)
    csum = np.concatenate([[0.0], np.cumsum(values)])
    return csum[offsets[1:]] - csum[offsets[:-1]]


def jet_four_momentum(
    px: np.ndarray, py: np.ndarray, pz: np.ndarray, energy: np.ndarray, offsets: np.ndarray
) -> dict[str, np.ndarray]:
    """E-scheme jet four-momentum and (pT, eta, phi, mass) per jet, from flat constituents."""
    jpx, jpy, jpz, je = (segment_sum(a, offsets) for a in (px, py, pz, energy))
    pt, eta, phi = pxpypz_to_ptetaphi(jpx, jpy, jpz)
    return {
        "px": jpx,
        "py": jpy,
        "pz": jpz,
        "energy": je,
        "pt": pt,
        "eta": eta,
        "phi": phi,
        "mass": invariant_mass(je, jpx, jpy, jpz),
    }
