"""Energy-flow polynomials (EFPs; Komiske, Metodiev & Thaler, arXiv:1712.07124), vectorised over jets.

For a multigraph G with vertices 1..n and edge multiset E::

    EFP_G = sum_{i_1..i_n} z_{i_1} ... z_{i_n} prod_{(k,l) in E} theta_{i_k i_l}

with the hadronic measure, beta = 1, normalised energies (the ``energyflow`` package's
``measure="hadr", beta=1, normed=True``): ``z_i = pT_i / sum_j pT_j`` and
``theta_ij = sqrt(dy^2 + dphi^2)`` (dphi wrapped into (-pi, pi]; pass rapidity or pseudorapidity as
``y``, e.g. pseudorapidity for massless particles as JetNet does).

Every connected multigraph ("prime" EFP) with d <= 4 edges is listed in :data:`PRIME_GRAPHS_D4`
(20 graphs: 1 with d=1, 2 with d=2, 5 with d=3, 12 with d=4; the same graphs, vertex labels and order
as ``energyflow.EFPSet("d<=4", "p==1")`` without its d=0 entry: by number of vertices, then edges).
Composite EFPs are products of prime ones (z is normalised), so they add no information and are not
computed. :data:`JETNET_W1EFP_GRAPHS` are the five prime graphs with n = 4 vertices and d = 4 edges
that JetNet's ``w1efp`` uses by default (``efpset_args=[("n==", 4), ("d==", 4), ("p==", 1)]``).

Evaluation: a tree graph is one ``np.einsum`` over padded (B, N) energies and a (B, N, N) angle matrix
(contraction order chosen by NumPy, O(B N^2)); the four graphs with a cycle in :data:`PRIME_GRAPHS_D4`
use batched matrix products (O(B N^3)) because einsum's batched fallback for them is ~100x slower.
Other cyclic graphs passed by the caller go through einsum (correct, slow).
"""

from __future__ import annotations

import contextlib

import numpy as np

Graph = tuple[tuple[int, int], ...]

PRIME_GRAPHS_D4: tuple[Graph, ...] = (
    # n = 2 vertices, d = 1..4
    ((0, 1),),
    ((0, 1), (0, 1)),
    ((0, 1), (0, 1), (0, 1)),
    ((0, 1), (0, 1), (0, 1), (0, 1)),
    # n = 3
    ((0, 1), (0, 2)),
    ((0, 1), (0, 2), (0, 2)),
    ((0, 1), (0, 2), (0, 2), (0, 2)),
    ((0, 1), (0, 1), (0, 2), (0, 2)),
    ((0, 1), (0, 2), (1, 2)),  # triangle
    ((0, 1), (0, 2), (0, 2), (1, 2)),  # triangle, one doubled edge
    # n = 4
    ((0, 1), (0, 2), (0, 3)),
    ((0, 1), (0, 2), (0, 2), (0, 3)),
    ((0, 1), (0, 2), (1, 3)),
    ((0, 1), (0, 2), (0, 2), (1, 3)),
    ((0, 1), (0, 1), (0, 2), (1, 3)),
    ((0, 1), (0, 2), (1, 2), (0, 3)),  # triangle with a pendant edge
    ((0, 1), (0, 2), (1, 3), (2, 3)),  # square
    # n = 5
    ((0, 1), (0, 2), (0, 3), (0, 4)),
    ((0, 1), (0, 2), (0, 3), (1, 4)),
    ((0, 1), (0, 2), (1, 3), (2, 4)),
)

JETNET_W1EFP_GRAPHS: tuple[Graph, ...] = tuple(
    g for g in PRIME_GRAPHS_D4 if len(g) == 4 and len({v for e in g for v in e}) == 4
)

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _einsum_spec(graph: Graph) -> tuple[str, list[tuple[int, int, int]], list[int]]:
    """Subscripts 'Z..,T..->Z' for one graph; batch index is 'Z' (never a vertex letter)."""
    vertices = sorted({v for e in graph for v in e})
    if len(vertices) > len(_LETTERS) - 1:
        raise ValueError(f"graph has too many vertices ({len(vertices)})")
    mult: dict[tuple[int, int], int] = {}
    for a, b in graph:
        if a == b:
            raise ValueError(f"self-loops are not allowed in EFP graphs; found edge {(a, b)}")
        key = (min(a, b), max(a, b))
        mult[key] = mult.get(key, 0) + 1
    edges = [(a, b, m) for (a, b), m in sorted(mult.items())]
    terms = [f"Z{_LETTERS[v]}" for v in vertices] + [
        f"Z{_LETTERS[a]}{_LETTERS[b]}" for a, b, _ in edges
    ]
    return ",".join(terms) + "->Z", edges, vertices


def _cyclic(graph: Graph, z: np.ndarray, theta: np.ndarray) -> np.ndarray | None:
    """Batched-matmul evaluation of the cyclic graphs of PRIME_GRAPHS_D4; None for any other graph."""
    # a[b, i, j] = theta_ij z_j: one "walk" step that sums over the arrival vertex j.
    a = theta * z[:, None, :]
    if graph == ((0, 1), (0, 2), (1, 2)):
        # sum_ik z_i z_k theta_ik (sum_j theta_ij z_j theta_jk)
        return np.einsum("bi,bk,bik,bik->b", z, z, theta, a @ theta, optimize=True)
    if graph == ((0, 1), (0, 2), (0, 2), (1, 2)):
        return np.einsum("bi,bk,bik,bik->b", z, z, theta * theta, a @ theta, optimize=True)
    if graph == ((0, 1), (0, 2), (1, 2), (0, 3)):
        w = z * np.einsum("bil,bl->bi", theta, z)  # vertex 0 carries its pendant edge
        return np.einsum("bi,bk,bik,bik->b", w, z, theta, a @ theta, optimize=True)
    if graph == ((0, 1), (0, 2), (1, 3), (2, 3)):
        c = a @ theta  # c[i, k] = sum_j theta_ij z_j theta_jk, the two paths 0-1-3 and 0-2-3
        return np.einsum("bi,bk,bik->b", z, z, c * c, optimize=True)
    return None


def _single_threaded_blas() -> contextlib.AbstractContextManager:
    """Limit BLAS to one thread while evaluating: the (N, N) products are small, and a multi-threaded
    BLAS on a busy machine was measured ~20x slower (oversubscription). No-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _pad(values: np.ndarray, offsets: np.ndarray, n_max: int) -> np.ndarray:
    counts = np.diff(offsets)
    out = np.zeros((len(counts), n_max))
    row = np.repeat(np.arange(len(counts)), counts)
    col = np.arange(len(values)) - np.repeat(offsets[:-1], counts)
    out[row, col] = values
    return out


def efp(
    pt: np.ndarray,
    y: np.ndarray,
    phi: np.ndarray,
    offsets: np.ndarray,
    graphs: tuple[Graph, ...] = PRIME_GRAPHS_D4,
    *,
    chunk_size: int = 512,
) -> np.ndarray:
    """EFP values (n_jets, len(graphs)) float64 for jagged particles (flat arrays + offsets).

    An empty jet (or all pT = 0) gives 0 for every graph. ``graphs`` are edge lists of vertex indices.
    """
    pt = np.asarray(pt, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.int64)
    if not (len(pt) == len(y) == len(phi) == offsets[-1]) or offsets[0] != 0:
        raise ValueError(
            f"pt, y, phi must have offsets[-1] = {offsets[-1]} entries and offsets[0] = 0; "
            f"found lengths {len(pt)}, {len(y)}, {len(phi)} and offsets[0] = {offsets[0]}"
        )
    specs = [_einsum_spec(g) for g in graphs]
    n_jets = len(offsets) - 1
    out = np.zeros((n_jets, len(graphs)))
    with _single_threaded_blas():
        for start in range(0, n_jets, chunk_size):
            _efp_chunk(
                pt, y, phi, offsets, graphs, specs, start, min(start + chunk_size, n_jets), out
            )
    return out


def _efp_chunk(
    pt: np.ndarray,
    y: np.ndarray,
    phi: np.ndarray,
    offsets: np.ndarray,
    graphs: tuple[Graph, ...],
    specs: list[tuple[str, list[tuple[int, int, int]], list[int]]],
    start: int,
    stop: int,
    out: np.ndarray,
) -> None:
    """Fill out[start:stop] (one chunk of jets, padded to the longest jet of the chunk)."""
    a, b = offsets[start], offsets[stop]
    sub_off = offsets[start : stop + 1] - a
    n_pad = int(np.diff(sub_off).max(initial=0))
    if n_pad == 0:
        return  # only empty jets: EFPs stay 0
    p = _pad(pt[a:b], sub_off, n_pad)  # (B, N), zero pT for padding -> z = 0 there
    total = p.sum(axis=1, keepdims=True)
    z = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    yy = _pad(y[a:b], sub_off, n_pad)
    pp = _pad(phi[a:b], sub_off, n_pad)
    dy = yy[:, :, None] - yy[:, None, :]
    dphi = np.mod(pp[:, :, None] - pp[:, None, :] + np.pi, 2.0 * np.pi) - np.pi
    theta = np.sqrt(dy * dy + dphi * dphi)  # (B, N, N)
    powers = {1: theta}
    for j, (subs, edges, vertices) in enumerate(specs):
        special = _cyclic(tuple(graphs[j]), z, theta)
        if special is not None:
            out[start:stop, j] = special
            continue
        for _, _, m in edges:
            if m not in powers:
                powers[m] = theta**m
        operands = [z] * len(vertices) + [powers[m] for _, _, m in edges]
        out[start:stop, j] = np.einsum(subs, *operands, optimize="greedy")
