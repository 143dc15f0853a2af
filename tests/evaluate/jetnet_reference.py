"""Produce the jetnet reference numbers hard-coded in test_generative.py::test_matches_jetnet.

Not a test (not collected) and not a jetfm dependency. Run it in a throw-away venv:

    python -m venv /tmp/jn && /tmp/jn/bin/pip install jetnet   # jetnet 0.2.5, numpy 2.4, torch 2.14
    /tmp/jn/bin/python tests/evaluate/jetnet_reference.py

The inputs are the same ``toy_particles`` as in the test (NumPy's PCG64 streams are stable across
versions). jetnet's W1 functions draw from an unseeded module-level generator; it is replaced here
by ``default_rng(0)``, which is what jetfm's ``seed=0`` uses.
"""

import sys
import types

import numpy as np

# wasserstein 1.0.1 (an energyflow dependency used only for EMDs) was built against the numpy 1 ABI
# and fails to import under numpy 2; none of the metrics below uses it.
sys.modules["wasserstein"] = types.ModuleType("wasserstein")
import jetnet.evaluation.gen_metrics as gm  # noqa: E402


def toy_particles(seed, n_jets=200, n_max=12, width=0.1):
    rng = np.random.default_rng(seed)
    counts = rng.integers(3, n_max + 1, n_jets)
    mask = np.arange(n_max)[None, :] < counts[:, None]
    deta = rng.normal(0.0, width, (n_jets, n_max))
    dphi = rng.normal(0.0, width, (n_jets, n_max))
    pt = rng.exponential(1.0, (n_jets, n_max)) * mask
    pt = pt / pt.sum(axis=1, keepdims=True)
    return np.stack([deta, dphi, pt], axis=-1) * mask[..., None], mask


np.set_printoptions(precision=17)
x1, m1 = toy_particles(1)
x2, m2 = toy_particles(2, width=0.12)
gm.rng = np.random.default_rng(0)
print("w1m", gm.w1m(x1, x2, num_eval_samples=150, num_batches=3))
gm.rng = np.random.default_rng(0)
print("w1p", gm.w1p(x1, x2, m1, m2, num_eval_samples=150, num_batches=3))
gm.rng = np.random.default_rng(0)
print("w1efp", gm.w1efp(x1, x2, num_eval_samples=150, num_batches=3, efp_jobs=1))
f1 = gm.get_fpd_kpd_jet_features(x1, efp_jobs=1)
f2 = gm.get_fpd_kpd_jet_features(x2, efp_jobs=1)
print("efp feature shape", f1.shape)
print("fpd", repr(gm.fpd(f1, f2, min_samples=100, max_samples=200, num_batches=4, num_points=3)))
print("kpd", repr(gm.kpd(f1, f2, num_batches=4, batch_size=150)))
rng = np.random.default_rng(10)
g1 = rng.normal(0, 1, (1000, 3))
g2 = rng.normal(0.2, 1.2, (1000, 3))
print(
    "fpd gauss", repr(gm.fpd(g1, g2, min_samples=200, max_samples=500, num_batches=5, num_points=4))
)
print("kpd gauss", repr(gm.kpd(g1, g2, num_batches=5, batch_size=200)))
