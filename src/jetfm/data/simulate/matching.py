"""Truth matching of jets to resonance decays, from Pythia's event record.

A signal jet is kept only if *all* visible decay products of one resonance lie within dR < R of the
jet axis (JetClass's definition). Decay products are the partons and charged leptons produced in the
resonance decay chain, taken at their production (before showering): for H -> WW*/ZZ* and t -> Wb the
intermediate W/Z are followed to their own decay. Neutrinos are invisible and are not required.

The record of one event is given as NumPy arrays (``ids``, ``d1``, ``d2`` daughter indices, momenta);
index 0 is Pythia's "system" entry, exactly as in ``pythia.event``.
"""

from __future__ import annotations

import numpy as np

from jetfm.data.simulate.processes import ProcessSpec
from jetfm.physics.kinematics import delta_r

_QUARK_IDS = frozenset({1, 2, 3, 4, 5})
_LEPTON_IDS = frozenset({11, 13, 15})
_NEUTRINO_IDS = frozenset({12, 14, 16})
_INTERMEDIATE = frozenset({6, 23, 24, 25})


def daughters(i: int, d1: np.ndarray, d2: np.ndarray) -> list[int]:
    """Daughter indices of entry ``i`` following Pythia's daughter1/daughter2 conventions."""
    a, b = int(d1[i]), int(d2[i])
    if a <= 0 and b <= 0:
        return []
    if b == 0 or b == a:
        return [a]
    if b > a:
        return list(range(a, b + 1))
    return [a, b]  # b < a: two separate daughters


def last_copy(i: int, ids: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> int:
    """Follow a particle through its recoil copies (same id) to the entry that decays."""
    for _ in range(1000):
        same = [d for d in daughters(i, d1, d2) if ids[d] == ids[i]]
        if not same:
            return i
        i = same[0]
    return i


def decay_products(i: int, ids: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> list[int]:
    """Visible final partons/leptons of the decay of entry ``i`` (W/Z/t/H followed recursively)."""
    out: list[int] = []
    for d in daughters(last_copy(i, ids, d1, d2), d1, d2):
        a = abs(int(ids[d]))
        if a in _INTERMEDIATE:
            out.extend(decay_products(d, ids, d1, d2))
        elif a in _NEUTRINO_IDS:
            continue
        elif a in _QUARK_IDS or a in _LEPTON_IDS or a == 21:
            out.append(d)
    return out


def resonance_candidates(
    spec: ProcessSpec, ids: np.ndarray, d1: np.ndarray, d2: np.ndarray
) -> list[list[int]]:
    """Decay-product index lists, one per resonance in the event whose decay matches ``spec``."""
    if spec.resonance == 0:
        return []
    cands = []
    for i in np.flatnonzero(np.abs(ids) == spec.resonance).tolist():
        if any(ids[d] == ids[i] for d in daughters(i, d1, d2)):
            continue  # a recoil copy; only the decaying (last) copy defines the decay products
        prods = decay_products(i, ids, d1, d2)
        pa = [abs(int(ids[d])) for d in prods]
        nq = sum(a in _QUARK_IDS for a in pa)
        nl = sum(a in _LEPTON_IDS for a in pa)
        ng = sum(a == 21 for a in pa)
        if (nq, nl, ng) == (spec.n_quarks, spec.n_leptons, spec.n_gluons):
            cands.append(prods)
    return cands


def match_jets(
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    candidates: list[list[int]],
    px: np.ndarray,
    py: np.ndarray,
    pz: np.ndarray,
    radius: float,
) -> np.ndarray:
    """Boolean (n_jets,): jet contains all decay products of at least one candidate (dR < radius)."""
    matched = np.zeros(len(jet_eta), dtype=bool)
    for prods in candidates:
        x, y, z = px[prods], py[prods], pz[prods]
        eta, phi = np.arcsinh(z / np.hypot(x, y)), np.arctan2(y, x)
        dr = delta_r(
            jet_eta[:, None], jet_phi[:, None], eta[None, :], phi[None, :]
        )  # (jets, prods)
        matched |= np.all(dr < radius, axis=1)
    return matched
