"""Energy-flow polynomials: hand values, brute-force sums over vertex tuples, edge cases."""

import itertools
import math

import numpy as np
import pytest

from jetfm.physics.efp import JETNET_W1EFP_GRAPHS, PRIME_GRAPHS_D4, efp


def test_graph_catalogue():
    assert len(PRIME_GRAPHS_D4) == 20
    per_degree = [sum(len(g) == d for g in PRIME_GRAPHS_D4) for d in (1, 2, 3, 4)]
    assert per_degree == [1, 2, 5, 12]  # connected multigraphs with d edges
    assert len(set(PRIME_GRAPHS_D4)) == 20
    assert len(JETNET_W1EFP_GRAPHS) == 5
    assert all(len(g) == 4 and len({v for e in g for v in e}) == 4 for g in JETNET_W1EFP_GRAPHS)


def test_two_particle_hand_values():
    # z = (0.5, 0.5), theta_01 = 0.4
    out = efp(
        [1.0, 1.0],
        [0.0, 0.0],
        [0.2, -0.2],
        [0, 2],
        graphs=(((0, 1),), ((0, 1), (0, 1)), ((0, 1), (0, 2))),
    )
    # edge: sum_ij z_i z_j theta_ij = 2 * 0.25 * 0.4; double edge: 2 * 0.25 * 0.16;
    # path 1-0-2: sum_i z_i (sum_j z_j theta_ij)^2 = 2 * 0.5 * 0.2^2
    np.testing.assert_allclose(out[0], [0.2, 0.08, 0.04])


def _brute(z, theta, graph):
    n_vertices = max(max(e) for e in graph) + 1
    total = 0.0
    for idx in itertools.product(range(len(z)), repeat=n_vertices):
        term = math.prod(z[i] for i in idx)
        for a, b in graph:
            term *= theta[idx[a], idx[b]]
        total += term
    return total


def test_all_prime_graphs_against_brute_force_and_phi_wrap():
    rng = np.random.default_rng(11)
    counts = np.array([1, 4, 0, 5])
    off = np.concatenate([[0], np.cumsum(counts)])
    n = off[-1]
    pt = rng.exponential(5.0, n) + 0.1
    y = rng.normal(0, 0.3, n)
    phi = np.mod(np.pi + rng.normal(0, 0.3, n) + np.pi, 2 * np.pi) - np.pi  # around the cut at pi
    out = efp(pt, y, phi, off)
    assert out.shape == (4, 20)
    for j in range(4):
        sl = slice(off[j], off[j + 1])
        if counts[j] == 0:
            np.testing.assert_array_equal(out[j], 0.0)
            continue
        z = pt[sl] / pt[sl].sum()
        dphi = np.abs(phi[sl][:, None] - phi[sl][None, :])
        dphi = np.minimum(dphi, 2 * np.pi - dphi)
        theta = np.hypot(y[sl][:, None] - y[sl][None, :], dphi)
        ref = [_brute(z, theta, g) for g in PRIME_GRAPHS_D4]
        np.testing.assert_allclose(out[j], ref, rtol=1e-10, atol=1e-15)
    np.testing.assert_array_equal(out[0], 0.0)  # a single particle has theta = 0


def test_chunking_and_subset_consistency():
    rng = np.random.default_rng(2)
    counts = rng.integers(0, 30, 40)
    off = np.concatenate([[0], np.cumsum(counts)])
    n = off[-1]
    pt, y, phi = rng.exponential(5.0, n), rng.normal(0, 0.3, n), rng.uniform(-np.pi, np.pi, n)
    full = efp(pt, y, phi, off)
    chunked = efp(pt, y, phi, off, chunk_size=3)
    np.testing.assert_allclose(full, chunked, rtol=1e-12)
    cols = [PRIME_GRAPHS_D4.index(g) for g in JETNET_W1EFP_GRAPHS]
    np.testing.assert_allclose(efp(pt, y, phi, off, JETNET_W1EFP_GRAPHS), full[:, cols], rtol=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="entries"):
        efp([1.0], [0.0], [0.0], [0, 2])
    with pytest.raises(ValueError, match="self-loops"):
        efp([1.0], [0.0], [0.0], [0, 1], graphs=(((0, 0),),))
