"""Jet observables from jagged constituents (flat particle arrays + ``offsets``, as in :mod:`jets`).

Two groups:

* per-particle coordinates relative to the jet (what tokenizers and classifiers eat):
  :func:`constituent_features` -> ``deta, dphi, delta_r, log_pt, log_e, log_pt_rel, log_e_rel,
  pt_frac, e_frac``;
* N-subjettiness (Thaler & Van Tilburg, arXiv:1011.2268) with beta = 1 and exclusive-kT axes:
  :func:`nsubjettiness`.

N-subjettiness definition used here (identical to fjcontrib's ``NormalizedMeasure(beta=1, R0)`` with
``KT_Axes``)::

    tau_N = sum_i pT_i * min_k dR(i, axis_k)  /  (sum_i pT_i * R0)

where the N axes are the exclusive-kT subjets (kT algorithm, E-scheme, R = 1000 so that the beam never
wins, stopped at N jets) of the jet's own constituents, ``dR`` is measured in (rapidity, azimuth) as
FastJet does, and R0 is the jet radius. Conventions for degenerate jets (documented, tested):

* a jet with <= N constituents has tau_N = 0 (each particle is its own axis);
* an empty jet (or one whose constituents all have pT = 0) has tau_N = 0;
* ratios tau21 = tau2 / tau1 and tau32 = tau3 / tau2 are 0 when the denominator is 0 (never NaN), so a
  1-particle jet has tau21 = 0 and a 2-particle jet tau32 = 0.

Two backends give the same numbers (agreement to ~1e-12 is tested):
``"numpy"`` (default: FastJet multi-event kT clustering once for all jets, axes read with
``exclusive_jets_up_to(N)`` for N = 1..n_max, distances in NumPy) and ``"fjcontrib"`` (the fjcontrib
``Nsubjettiness`` C++ code that the scikit-hep ``fastjet`` package exposes as ``njettiness``; it reclusters
per N, hence slower).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jetfm.core.errors import InputError
from jetfm.physics.jets import jet_four_momentum
from jetfm.physics.kinematics import delta_phi, pxpypz_to_ptetaphi

# Floor for logarithms of momenta/energies, so that zero-pT padding-like particles stay finite.
LOG_FLOOR = 1.0e-8
# Rapidity cap for particles with E == |pz| (FastJet uses 1e5 for its MaxRap).
_RAP_CAP = 1.0e5
# kT clustering radius for exclusive axes: FastJet's JetDefinition::max_allowable_R (as fjcontrib).
_KT_AXES_R = 1000.0


def _as_f64(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(a, dtype=np.float64) for a in arrays)


def check_offsets(offsets: np.ndarray, n_particles: int) -> np.ndarray:
    """``offsets`` as int64 after checking it is a jagged index over ``n_particles`` particles:
    1-D integers, first entry 0, last entry ``n_particles``, non-decreasing. Every jagged physics
    function (observables, grooming) validates its input here, with the same error."""
    off = np.asarray(offsets)
    if off.ndim != 1 or len(off) < 1 or not np.issubdtype(off.dtype, np.integer):
        raise InputError(
            "a 1-D integer array of length n_jets + 1",
            field="offsets",
            found=f"{off.dtype}{off.shape}",
        )
    off = off.astype(np.int64)
    if off[0] != 0 or off[-1] != n_particles:
        raise InputError(
            f"first entry 0 and last entry n_particles = {n_particles}",
            field="offsets",
            found=f"{int(off[0])} ... {int(off[-1])}",
        )
    if np.any(np.diff(off) < 0):
        raise InputError("non-decreasing values", field="offsets", found="a decreasing step")
    return off


def apply_in_jet_chunks(
    fn: Callable[..., dict[str, np.ndarray]],
    momenta: Sequence[np.ndarray],
    offsets: np.ndarray,
    chunk_size: int,
    empty: dict[str, np.ndarray],
    *args: Any,
) -> dict[str, np.ndarray]:
    """Per-jet results of ``fn(*momenta_chunk, offsets_chunk, *args)`` over blocks of ``chunk_size``
    jets, concatenated (``empty`` when there are no jets).

    Why: the per-jet algorithms (N-subjettiness, soft drop) build dense per-block tables, so memory
    is bounded by handing them a slice of jets at a time, with offsets rebased to 0.
    """
    n_jets = len(offsets) - 1
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n_jets, chunk_size):
        stop = min(start + chunk_size, n_jets)
        a, b = offsets[start], offsets[stop]
        parts.append(fn(*(m[a:b] for m in momenta), offsets[start : stop + 1] - a, *args))
    if not parts:
        return empty
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def safe_rapidity(px: np.ndarray, py: np.ndarray, pz: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """Rapidity y = 0.5 ln((E + pz) / (E - pz)), computed as FastJet does.

    ``y = sign(pz) * 0.5 * ln((E + |pz|)^2 / (pT^2 + max(m^2, 0)))``: stable for collinear particles and
    for massless particles whose rounded E gives a slightly negative m^2. Capped at +-1e5 when
    pT = m = 0 (along the beam); 0 for a particle at rest.
    """
    px, py, pz, energy = _as_f64(px, py, pz, energy)
    pt2 = px * px + py * py
    m2 = np.maximum(energy * energy - pt2 - pz * pz, 0.0)
    mt2 = pt2 + m2
    num = energy + np.abs(pz)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = 0.5 * np.log(num * num / mt2)
    y = np.where(mt2 > 0, y, _RAP_CAP)
    y = np.where(num > 0, y, 0.0)
    return np.minimum(y, _RAP_CAP) * np.where(pz < 0, -1.0, 1.0)


def constituent_features(
    px: np.ndarray, py: np.ndarray, pz: np.ndarray, energy: np.ndarray, offsets: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-particle features relative to the E-scheme jet axis, flat float64 arrays (n_particles,).

    ``deta = eta - eta_jet``, ``dphi = phi - phi_jet`` wrapped to (-pi, pi], ``delta_r = hypot``;
    ``log_pt, log_e`` natural logs (floored at :data:`LOG_FLOOR` GeV);
    ``pt_frac = pT / pT_jet``, ``e_frac = E / E_jet`` (0 for a zero jet) and their logs
    ``log_pt_rel, log_e_rel`` (floored). Also returns ``pt, eta, phi`` of the particles.
    """
    px, py, pz, energy = _as_f64(px, py, pz, energy)
    offsets = check_offsets(offsets, len(px))
    jet = jet_four_momentum(px, py, pz, energy, offsets)
    counts = np.diff(offsets)
    pt, eta, phi = pxpypz_to_ptetaphi(px, py, pz)

    def per_particle(a: np.ndarray) -> np.ndarray:
        return np.repeat(a, counts)

    jet_pt, jet_e = per_particle(jet["pt"]), per_particle(jet["energy"])
    deta = eta - per_particle(jet["eta"])
    dphi = delta_phi(phi, per_particle(jet["phi"]))
    with np.errstate(divide="ignore", invalid="ignore"):
        pt_frac = np.where(jet_pt > 0, pt / np.where(jet_pt > 0, jet_pt, 1.0), 0.0)
        e_frac = np.where(jet_e > 0, energy / np.where(jet_e > 0, jet_e, 1.0), 0.0)
    return {
        "pt": pt,
        "eta": eta,
        "phi": phi,
        "deta": deta,
        "dphi": dphi,
        "delta_r": np.hypot(deta, dphi),
        "log_pt": np.log(np.maximum(pt, LOG_FLOOR)),
        "log_e": np.log(np.maximum(energy, LOG_FLOOR)),
        "pt_frac": pt_frac,
        "e_frac": e_frac,
        "log_pt_rel": np.log(np.maximum(pt_frac, LOG_FLOOR)),
        "log_e_rel": np.log(np.maximum(e_frac, LOG_FLOOR)),
    }


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _ratios(taus: dict[str, np.ndarray], n_max: int) -> dict[str, np.ndarray]:
    out = dict(taus)
    for n in range(2, n_max + 1):
        out[f"tau{n}{n - 1}"] = _safe_ratio(taus[f"tau{n}"], taus[f"tau{n - 1}"])
    return out


def _awkward_particles(
    px: np.ndarray, py: np.ndarray, pz: np.ndarray, energy: np.ndarray, counts: np.ndarray
) -> object:
    """One awkward "event" per jet, as the fastjet multi-event interface wants."""
    import awkward as ak

    return ak.unflatten(ak.zip({"px": px, "py": py, "pz": pz, "E": energy}), counts)


def _taus_numpy(
    px: np.ndarray,
    py: np.ndarray,
    pz: np.ndarray,
    energy: np.ndarray,
    offsets: np.ndarray,
    n_max: int,
    R: float,
) -> dict[str, np.ndarray]:
    import awkward as ak
    import fastjet

    counts = np.diff(offsets)
    n_jets = len(counts)
    pt = np.hypot(px, py)
    rap = safe_rapidity(px, py, pz, energy)
    phi = np.arctan2(py, px)
    jet_idx = np.repeat(np.arange(n_jets), counts)
    norm = np.bincount(jet_idx, weights=pt, minlength=n_jets) * R
    taus = {f"tau{n}": np.zeros(n_jets) for n in range(1, n_max + 1)}
    if len(px) == 0:
        return taus
    events = _awkward_particles(px, py, pz, energy, counts)
    cs = fastjet.ClusterSequence(events, fastjet.JetDefinition(fastjet.kt_algorithm, _KT_AXES_R))
    for n in range(1, n_max + 1):
        with warnings.catch_warnings():
            # fastjet 3.5 warns about exclusive jets even for kT (its algorithm check is buggy).
            warnings.simplefilter("ignore", UserWarning)
            axes = cs.exclusive_jets_up_to(n_jets=n)
        n_ax = ak.to_numpy(ak.num(axes))
        flat = {
            k: ak.to_numpy(ak.flatten(axes[k])).astype(np.float64) for k in ("px", "py", "pz", "E")
        }
        ax_rap = np.full((n_jets, n), np.inf)
        ax_phi = np.zeros((n_jets, n))
        row = np.repeat(np.arange(n_jets), n_ax)
        col = np.arange(len(row)) - np.repeat(np.cumsum(n_ax) - n_ax, n_ax)
        ax_rap[row, col] = safe_rapidity(flat["px"], flat["py"], flat["pz"], flat["E"])
        ax_phi[row, col] = np.arctan2(flat["py"], flat["px"])
        drap = rap[:, None] - ax_rap[jet_idx]  # (n_particles, n); padded axes -> inf
        dphi = np.abs(phi[:, None] - ax_phi[jet_idx])
        dphi = np.minimum(dphi, 2.0 * np.pi - dphi)
        dmin = np.sqrt(np.min(drap * drap + dphi * dphi, axis=1))
        num = np.bincount(jet_idx, weights=pt * dmin, minlength=n_jets)
        taus[f"tau{n}"] = _safe_ratio(num, norm)
    return taus


def _taus_fjcontrib(
    px: np.ndarray,
    py: np.ndarray,
    pz: np.ndarray,
    energy: np.ndarray,
    offsets: np.ndarray,
    n_max: int,
    R: float,
) -> dict[str, np.ndarray]:
    import awkward as ak
    import fastjet

    counts = np.diff(offsets)
    n_jets = len(counts)
    if len(px) == 0:
        return {f"tau{n}": np.zeros(n_jets) for n in range(1, n_max + 1)}
    events = _awkward_particles(px, py, pz, energy, counts)
    # The clustering itself is not used: njettiness works on each event's input particles.
    cs = fastjet.ClusterSequence(events, fastjet.JetDefinition(fastjet.kt_algorithm, R))
    res = cs.njettiness(
        measure_definition="NormalizedMeasure",
        axes_definition="KT_Axes",
        njets=list(range(1, n_max + 1)),
        beta=1.0,
        R0=R,
    )
    arr = np.asarray(ak.to_numpy(res), dtype=np.float64).reshape(n_jets, n_max)
    return {f"tau{n}": arr[:, n - 1].copy() for n in range(1, n_max + 1)}


def nsubjettiness(
    px: np.ndarray,
    py: np.ndarray,
    pz: np.ndarray,
    energy: np.ndarray,
    offsets: np.ndarray,
    n_max: int = 3,
    R: float = 0.8,
    *,
    backend: str = "numpy",
    chunk_size: int = 20000,
) -> dict[str, np.ndarray]:
    """N-subjettiness tau_1..tau_{n_max} and ratios tau21, tau32, ... per jet (float64, (n_jets,)).

    beta = 1, exclusive-kT axes, normalised by sum pT * R (see the module docstring for the exact
    definition and the conventions for jets with too few particles). ``backend`` is ``"numpy"`` or
    ``"fjcontrib"``; both use FastJet. Jets are processed ``chunk_size`` at a time to bound memory.
    """
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1; found {n_max}")
    if not R > 0:
        raise ValueError(f"R must be > 0; found {R}")
    funcs = {"numpy": _taus_numpy, "fjcontrib": _taus_fjcontrib}
    if backend not in funcs:
        raise ValueError(f"backend must be one of {sorted(funcs)}; found {backend!r}")
    px, py, pz, energy = _as_f64(px, py, pz, energy)
    offsets = check_offsets(offsets, len(px))
    empty = {f"tau{n}": np.zeros(0) for n in range(1, n_max + 1)}
    taus = apply_in_jet_chunks(
        funcs[backend], (px, py, pz, energy), offsets, chunk_size, empty, n_max, float(R)
    )
    return _ratios(taus, n_max)
