"""PDG particle id -> electric charge and JetClass-style particle-type flags.

Why a lookup table: the generator (Pythia 8 with default decays) leaves only a handful of long-lived
species in the final state (photons, e, mu, neutrinos, pi+-, K+-, K_L, p, n and, when their decays are
switched off, K_S, pi0, Lambda, Sigma, Xi, Omega). A sorted table of |id| -> charge, searched with
``np.searchsorted``, is exact, fast and fully vectorised. A few heavier hadrons (D, B, resonances) are
listed too so that samples made with decays partly switched off still work.

Antiparticles: ``charge(-id) == -charge(id)`` (the PDG convention: a negative id is the antiparticle).

Unknown ids: by default a ``ValueError`` listing the unknown ids is raised (a silent zero charge would
mislabel a particle). ``strict=False`` documents an explicit fallback: unknown ids get charge 0 and are
treated as neutral hadrons when |id| > 100 (the PDG numbering of hadrons), otherwise all flags False.

The five JetClass-style flags (order of :data:`PARTICLE_TYPES`):
``is_charged_hadron``: hadron (|id| > 100) with charge != 0;
``is_neutral_hadron``: hadron with charge 0 (n, K_L, K_S, pi0 if not decayed, Lambda, ...);
``is_photon``: id 22; ``is_electron``: |id| 11; ``is_muon``: |id| 13.
Neutrinos and tau leptons set no flag (they never reach a detector-like jet; the simulation drops
neutrinos before clustering).
"""

from __future__ import annotations

import numpy as np

PARTICLE_TYPES: tuple[str, ...] = (
    "is_charged_hadron",
    "is_neutral_hadron",
    "is_photon",
    "is_electron",
    "is_muon",
)

# |PDG id| -> charge (in units of e) of the particle with the positive id.
_CHARGE_BY_ABS_ID: dict[int, int] = {
    # leptons, photon
    11: -1,  # e-
    12: 0,  # nu_e
    13: -1,  # mu-
    14: 0,  # nu_mu
    15: -1,  # tau-
    16: 0,  # nu_tau
    22: 0,  # photon
    # light mesons
    111: 0,  # pi0
    113: 0,  # rho0
    130: 0,  # K_L
    211: 1,  # pi+
    213: 1,  # rho+
    221: 0,  # eta
    223: 0,  # omega
    310: 0,  # K_S
    311: 0,  # K0
    313: 0,  # K*0
    321: 1,  # K+
    323: 1,  # K*+
    331: 0,  # eta'
    333: 0,  # phi
    # heavy mesons
    411: 1,  # D+
    421: 0,  # D0
    431: 1,  # D_s+
    443: 0,  # J/psi
    511: 0,  # B0
    521: 1,  # B+
    531: 0,  # B_s0
    541: 1,  # B_c+
    # baryons
    2112: 0,  # n
    2212: 1,  # p
    3112: -1,  # Sigma-
    3122: 0,  # Lambda
    3212: 0,  # Sigma0
    3222: 1,  # Sigma+
    3312: -1,  # Xi-
    3322: 0,  # Xi0
    3334: -1,  # Omega-
    4122: 1,  # Lambda_c+
    5122: 0,  # Lambda_b0
}
_IDS = np.array(sorted(_CHARGE_BY_ABS_ID), dtype=np.int64)
_CHARGES = np.array([_CHARGE_BY_ABS_ID[i] for i in _IDS.tolist()], dtype=np.int8)


def _lookup(pid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pid as int64, index into the table, known mask)."""
    pid = np.asarray(pid)
    if pid.dtype.kind not in "iu":
        if pid.size and not np.all(np.mod(pid, 1) == 0):
            raise ValueError(f"PDG ids must be integers; found dtype {pid.dtype} with fractions")
    pid = pid.astype(np.int64)
    apid = np.abs(pid)
    idx = np.clip(np.searchsorted(_IDS, apid), 0, len(_IDS) - 1)
    return pid, idx, _IDS[idx] == apid


def is_known_pdg_id(pid: np.ndarray) -> np.ndarray:
    """Bool per entry: is this id (or its antiparticle) in the charge table?"""
    return _lookup(pid)[2]


def pdg_charge(pid: np.ndarray, *, strict: bool = True) -> np.ndarray:
    """Electric charge (int8, units of e) for each PDG id; antiparticles get the opposite sign.

    ``strict=True`` raises ``ValueError`` naming the unknown ids; ``strict=False`` gives them 0.
    """
    pid, idx, known = _lookup(pid)
    if strict and not np.all(known):
        bad = np.unique(pid[~known])
        raise ValueError(
            f"unknown PDG id(s) {bad[:20].tolist()} (expected a final-state particle id; "
            "pass strict=False to give them charge 0)"
        )
    charge = np.where(known, _CHARGES[idx], 0).astype(np.int8)
    return np.where(pid < 0, -charge, charge).astype(np.int8)


def particle_type_flags(pid: np.ndarray, *, strict: bool = True, dtype: type = bool) -> np.ndarray:
    """(n, 5) JetClass-style flags in :data:`PARTICLE_TYPES` order, as ``dtype`` (bool or float)."""
    pid, _, _ = _lookup(pid)
    charge = pdg_charge(pid, strict=strict)
    apid = np.abs(pid)
    hadron = apid > 100
    flags = np.stack(
        [
            hadron & (charge != 0),
            hadron & (charge == 0),
            apid == 22,
            apid == 11,
            apid == 13,
        ],
        axis=-1,
    )
    return flags.astype(dtype)


def is_charged_hadron(pid: np.ndarray, *, strict: bool = True) -> np.ndarray:
    """Hadron (|id| > 100) with non-zero charge."""
    return particle_type_flags(pid, strict=strict)[..., 0]


def is_neutral_hadron(pid: np.ndarray, *, strict: bool = True) -> np.ndarray:
    """Hadron (|id| > 100) with zero charge."""
    return particle_type_flags(pid, strict=strict)[..., 1]


def is_photon(pid: np.ndarray) -> np.ndarray:
    """PDG id 22."""
    return np.asarray(pid) == 22


def is_electron(pid: np.ndarray) -> np.ndarray:
    """PDG id +-11 (electron or positron)."""
    return np.abs(np.asarray(pid)) == 11


def is_muon(pid: np.ndarray) -> np.ndarray:
    """PDG id +-13."""
    return np.abs(np.asarray(pid)) == 13
