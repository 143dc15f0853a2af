"""Four-vector conversions and relative coordinates.

Conventions: massless-safe, float64 internally where precision matters; azimuth in (-pi, pi].
Pseudorapidity of a particle with pT = 0 is +-inf by definition; we return a large finite value
(+-1e4 * sign(pz)) instead so that downstream features stay finite, and 0 for a particle at rest.
"""

from __future__ import annotations

import numpy as np

_ETA_CAP = 1.0e4


def wrap_phi(phi: np.ndarray) -> np.ndarray:
    """Map angles into (-pi, pi]."""
    phi = np.asarray(phi)
    out = np.mod(phi + np.pi, 2.0 * np.pi) - np.pi  # [-pi, pi)
    return np.where(out == -np.pi, np.pi, out).astype(phi.dtype if phi.dtype.kind == "f" else float)


def delta_phi(phi1: np.ndarray, phi2: np.ndarray) -> np.ndarray:
    """phi1 - phi2 wrapped into (-pi, pi]."""
    return wrap_phi(np.asarray(phi1, dtype=np.float64) - np.asarray(phi2, dtype=np.float64))


def delta_r(eta1: np.ndarray, phi1: np.ndarray, eta2: np.ndarray, phi2: np.ndarray) -> np.ndarray:
    """Angular distance sqrt(d_eta^2 + d_phi^2) with phi wrap-around."""
    deta = np.asarray(eta1, dtype=np.float64) - np.asarray(eta2, dtype=np.float64)
    return np.hypot(deta, delta_phi(phi1, phi2))


def pxpypz_to_ptetaphi(
    px: np.ndarray, py: np.ndarray, pz: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(px, py, pz) -> (pT, eta, phi). Vectorised; see module doc for pT = 0."""
    px = np.asarray(px, dtype=np.float64)
    py = np.asarray(py, dtype=np.float64)
    pz = np.asarray(pz, dtype=np.float64)
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, pz / np.where(pt > 0, pt, 1.0), 0.0))
    eta = np.where(pt > 0, eta, np.sign(pz) * _ETA_CAP)
    phi = np.arctan2(py, px)
    phi = np.where(phi == -np.pi, np.pi, phi)
    return pt, eta, phi


def ptetaphi_to_pxpypz(
    pt: np.ndarray, eta: np.ndarray, phi: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pT, eta, phi) -> (px, py, pz)."""
    pt = np.asarray(pt, dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    return pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)


def ptetaphim_to_energy(
    pt: np.ndarray, eta: np.ndarray, mass: np.ndarray | float = 0.0
) -> np.ndarray:
    """E = sqrt((pT cosh eta)^2 + m^2)."""
    p = np.asarray(pt, dtype=np.float64) * np.cosh(np.asarray(eta, dtype=np.float64))
    return np.sqrt(p * p + np.square(np.asarray(mass, dtype=np.float64)))


def invariant_mass(e: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
    """sqrt(max(E^2 - p^2, 0)); tiny negative values from rounding are clipped to 0."""
    e, px, py, pz = (np.asarray(a, dtype=np.float64) for a in (e, px, py, pz))
    m2 = e * e - px * px - py * py - pz * pz
    return np.sqrt(np.clip(m2, 0.0, None))
