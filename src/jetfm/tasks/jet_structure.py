"""Torch functions on padded jets that token tasks need on every batch: particle orders and jet
observables of the decoded particles.

They mirror numpy/FastJet functions of :mod:`jetfm.physics` (which stays free of torch) so that a
task can compute them inside the training step, on any device, without leaving the tensor world:
``subjet_order`` (the order :class:`~jetfm.tasks.ntp.NTPTask` writes particles in with
``order: subjets``), ``kt_nsubjettiness`` and ``massless_jet_kinematics`` (its jet tokens).

Shapes: B jets, N particles; ``mask`` (B, N) bool, True = real particle.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def front_pack(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Move real particles to the front of each jet, keeping their order -> (x, mask)."""
    order = (~mask).to(torch.int8).argsort(dim=1, stable=True)  # (B, N)
    x = x.gather(1, order[..., None].expand(-1, -1, x.shape[-1]))
    return x, mask.gather(1, order)


def subjet_order(
    deta: Tensor, dphi: Tensor, mask: Tensor, radius: float, seeds_first: int = 0
) -> Tensor:
    """The permutation (B, N) that lists each jet's particles subjet by subjet.

    ``deta``, ``dphi`` (B, N) are the particles' angles to the jet axis, front-packed in
    descending pT (the loader's order), ``mask`` (B, N) True = real. Each particle, hardest
    first, joins the nearest earlier seed within ``radius`` in (deta, dphi), or else becomes a
    seed itself: a seeded cone, anti-kT-like in that hard particles collect the soft ones around
    them. Subjets are listed in their seeds' order (descending seed pT), the particles of a subjet
    in descending pT, padding last. ``x.gather(1, perm)`` reorders a batch.

    ``seeds_first`` > 0 moves the seeds of the ``seeds_first`` hardest subjets to the front (in
    seed order); each of those subjets then continues with its other particles where it stood.
    A generator then lays out the jet's prongs (a top jet's three) before it fills any of them in.
    """
    N = mask.shape[1]
    pos = torch.arange(N, device=mask.device)
    group = seeded_cones(deta, dphi, mask, radius)  # (B, N)
    key = seeds_first + group * N + pos  # (B, N): seed rank, then pT rank
    if seeds_first > 0:
        is_seed = (group == pos) & mask  # (B, N)
        rank = is_seed.long().cumsum(dim=1) - 1  # (B, N): seed rank of each seed
        key = torch.where(is_seed & (rank < seeds_first), rank, key)
    key = key.masked_fill(~mask, seeds_first + N * N)
    return key.argsort(dim=1, stable=True)


def seeded_cones(deta: Tensor, dphi: Tensor, mask: Tensor, radius: float) -> Tensor:
    """The seed index (B, N) of each particle's cone (see :func:`subjet_order`; particles
    front-packed in descending pT). Padding keeps its own index."""
    B, N = mask.shape
    group = torch.arange(N, device=mask.device).expand(B, N).clone()  # (B, N)
    seed = torch.zeros(B, N, dtype=torch.bool, device=mask.device)
    seed[:, 0] = mask[:, 0]  # the hardest particle seeds the first subjet
    r2 = radius * radius
    for i in range(1, N):
        d2 = (deta[:, :i] - deta[:, i : i + 1]) ** 2 + (dphi[:, :i] - dphi[:, i : i + 1]) ** 2
        d2 = d2.masked_fill(~seed[:, :i], float("inf"))  # (B, i): to the seeds so far
        best, nearest = d2.min(dim=1)  # (B,)
        join = best < r2
        group[:, i] = torch.where(join, nearest, i)
        seed[:, i] = ~join & mask[:, i]
    return group


def kt_nsubjettiness(pt: Tensor, deta: Tensor, dphi: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """N-subjettiness ratios ``tau21``, ``tau32`` (B,) with exclusive-kT axes (beta = 1), the
    torch twin of :func:`jetfm.physics.observables.nsubjettiness` for jet tokens computed on every
    training batch, on any device.

    Particles (B, N) (pT, and angles to the jet axis), any order. The kT algorithm merges, one
    pair per step, the two pseudojets with the smallest min(pT_i, pT_j)^2 dR_ij^2 (no beam
    distance, as the exclusive axes of N-subjettiness use R = 1000) until 3, 2 and 1 remain;
    a merged pseudojet carries the summed pT at the pT-weighted mean (deta, dphi) (the E-scheme
    sum in the small-angle limit: jets here are R = 0.8). tau_N = sum_i pT_i min_k dR(i, axis_k)
    (the normalisation cancels in the ratios). A ratio whose denominator is 0 (one particle) is
    0, and a jet with no more than N particles has tau_N = 0, as in the numpy version.
    """
    B, N = mask.shape
    dev = pt.device
    w = pt.float().masked_fill(~mask, 0.0)  # (B, N) pseudojet pT (0 = gone)
    x = deta.float().masked_fill(~mask, 0.0)
    y = dphi.float().masked_fill(~mask, 0.0)
    alive = mask.clone()
    counts = mask.sum(dim=1)  # (B,)

    def distances(sel: Tensor, w1: Tensor, x1: Tensor, y1: Tensor) -> Tensor:
        """kT distances (b, m, N) of pseudojets (b, m) of jets ``sel`` (b,) to all of theirs."""
        kt = torch.minimum(w1[..., None], w[sel, None, :]) ** 2
        dx, dy = x1[..., None] - x[sel, None, :], y1[..., None] - y[sel, None, :]
        return kt * (dx * dx + dy * dy)

    d = distances(torch.arange(B, device=dev), w, x, y)  # (B, N, N)
    d = d.masked_fill(~(alive[:, :, None] & alive[:, None, :]), math.inf)
    d.diagonal(dim1=1, dim2=2).fill_(math.inf)
    axes: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
    n_alive = counts.clone()
    for n in (3, 2, 1):
        # merge the closest pair until every jet has at most n pseudojets; only row and column
        # of the two merged pseudojets change
        while True:
            sel = (n_alive > n).nonzero().squeeze(-1)  # (b,) jets that still merge
            if sel.numel() == 0:
                break
            flat = d[sel].flatten(1).argmin(dim=1)  # (b,)
            i, j = flat // N, flat % N
            wi, wj = w[sel, i], w[sel, j]
            ws = (wi + wj).clamp(min=1e-30)
            x[sel, i] = (wi * x[sel, i] + wj * x[sel, j]) / ws
            y[sel, i] = (wi * y[sel, i] + wj * y[sel, j]) / ws
            w[sel, i], w[sel, j] = wi + wj, 0.0
            alive[sel, j] = False
            n_alive[sel] -= 1
            row = distances(sel, w[sel, i][:, None], x[sel, i][:, None], y[sel, i][:, None])[:, 0]
            row = row.masked_fill(~alive[sel], math.inf)  # (b, N)
            row[torch.arange(len(sel), device=dev), i] = math.inf
            d[sel, i, :], d[sel, :, i] = row, row
            d[sel, j, :], d[sel, :, j] = math.inf, math.inf
        axes[n] = (x.clone(), y.clone(), alive.clone())
    pt0 = pt.float().masked_fill(~mask, 0.0)
    taus = {}
    for n, (ax, ay, ok) in axes.items():
        dx, dy = deta.float()[:, :, None] - ax[:, None], dphi.float()[:, :, None] - ay[:, None]
        d = (dx * dx + dy * dy).sqrt().masked_fill(~ok[:, None, :], math.inf)  # (B, N, N): n axes
        d = d.min(dim=-1).values  # (B, N) to the nearest axis
        tau = (pt0 * torch.where(torch.isfinite(d), d, torch.zeros_like(d))).sum(dim=1)
        taus[n] = torch.where(counts > n, tau, torch.zeros_like(tau))

    def ratio(a: Tensor, b: Tensor) -> Tensor:
        return torch.where(b > 0, a / b.clamp(min=1e-30), torch.zeros_like(a))

    return {"tau21": ratio(taus[2], taus[1]), "tau32": ratio(taus[3], taus[2])}


def massless_jet_kinematics(
    pt: Tensor, eta: Tensor, phi: Tensor, mask: Tensor
) -> dict[str, Tensor]:
    """E-scheme sum of massless particles (B, N) -> jet ``pt``, ``mass``, ``energy`` (B,) float64.

    The torch twin of :func:`jetfm.physics.jets.jet_four_momentum` with ``E = pT cosh(eta)``, for
    tensors on any device. Summed in float64: the mass is a difference of large squares.
    """
    w = mask.to(torch.float64)
    pt, eta, phi = pt.double() * w, eta.double(), phi.double()
    px, py = (pt * torch.cos(phi)).sum(1), (pt * torch.sin(phi)).sum(1)  # (B,)
    pz, e = (pt * torch.sinh(eta)).sum(1), (pt * torch.cosh(eta)).sum(1)  # (B,)
    m2 = e * e - px * px - py * py - pz * pz
    return {"pt": torch.hypot(px, py), "mass": m2.clamp(min=0.0).sqrt(), "energy": e}
