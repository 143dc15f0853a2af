from __future__ import annotations

import numpy as np

from jetfm.data.schema import JetBatch
from tests.conftest import make_toy_jets


def test_truncate_keeps_leading_particles_per_jet():
    b = make_toy_jets(30, seed=2)
    t = b.truncate(5)
    assert np.array_equal(t.counts(), np.minimum(b.counts(), 5))
    assert np.array_equal(t.jets["n_particles"], t.counts())
    for i in (0, 7, 29):
        lo, hi = b.offsets[i], b.offsets[i] + min(5, b.counts()[i])
        np.testing.assert_array_equal(
            t.particles["pt"][t.offsets[i] : t.offsets[i + 1]], b.particles["pt"][lo:hi]
        )
    t.validate()
    assert b.truncate(10_000).n_particles == b.n_particles


def test_select_and_concatenate_round_trip():
    b = make_toy_jets(12, seed=3)
    parts = [b.select(np.arange(0, 5)), b.select(np.arange(5, 12))]
    c = JetBatch.concatenate(parts)
    np.testing.assert_array_equal(c.offsets, b.offsets)
    np.testing.assert_array_equal(c.particles["eta"], b.particles["eta"])
