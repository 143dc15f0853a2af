from __future__ import annotations

import numpy as np
import pytest
import torch

from jetfm.core.errors import InputError
from jetfm.data.features import (
    FEATURE_SETS,
    Preprocessing,
    compute_features,
    features_to_kinematics,
)
from jetfm.data.schema import JetBatch
from tests.conftest import make_toy_jets


def _one_jet() -> JetBatch:
    # jet axis at eta=0.5, phi=3.1 (near the wrap); particle 2 sits across the -pi/pi boundary
    pt = np.array([100.0, 50.0])
    eta = np.array([0.6, 0.4])
    phi = np.array([3.0, -3.1])
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = pt * np.cosh(eta)
    return JetBatch(
        offsets=np.array([0, 2]),
        particles={
            "px": px, "py": py, "pz": pz, "energy": e, "pt": pt, "eta": eta, "phi": phi,
            "charge": np.array([1, 0]), "pid": np.array([211, 22]),
            "d0": np.array([0.5, 0.0]), "dz": np.array([-2.0, 0.0]),
        },
        jets={
            "pt": np.array([150.0]), "eta": np.array([0.5]), "phi": np.array([3.1]),
            "mass": np.array([10.0]), "energy": np.array([e.sum()]), "n_particles": np.array([2]),
            "label": np.array([0]),
        },
    )  # fmt: skip


def test_kin3_hand_values():
    x = compute_features(_one_jet(), FEATURE_SETS["kin3"])
    assert x.shape == (2, 3)
    np.testing.assert_allclose(x[:, 0], [0.1, -0.1], atol=1e-6)
    # -3.1 - 3.1 = -6.2 -> wrapped to 2*pi - 6.2 = 0.0831853
    np.testing.assert_allclose(x[:, 1], [-0.1, 2 * np.pi - 6.2], atol=1e-6)
    np.testing.assert_allclose(x[:, 2], np.log([100.0, 50.0]), rtol=1e-6)


def test_full_hand_values():
    names = FEATURE_SETS["full"]
    x = compute_features(_one_jet(), names)
    col = {n: x[:, i] for i, n in enumerate(names)}
    np.testing.assert_allclose(col["log_pt_rel"], np.log([100 / 150, 50 / 150]), rtol=1e-6)
    np.testing.assert_allclose(
        col["delta_r"], np.hypot([0.1, -0.1], [-0.1, 2 * np.pi - 6.2]), atol=1e-6
    )
    np.testing.assert_array_equal(col["is_charged_hadron"], [1, 0])
    np.testing.assert_array_equal(col["is_photon"], [0, 1])
    np.testing.assert_array_equal(col["charge"], [1, 0])
    np.testing.assert_allclose(col["tanh_dz"], np.tanh([-2.0, 0.0]), rtol=1e-6)


def test_standardisation_fit_and_exact_inverse(tmp_path):
    b = make_toy_jets(200, seed=4)
    pre = Preprocessing.for_set("full").fit(b)
    x = compute_features(b, pre.feature_names).astype(np.float64)
    z = pre.transform(x)
    cont = [
        i
        for i, n in enumerate(pre.feature_names)
        if n not in ("charge",) and not n.startswith("is_")
    ]
    np.testing.assert_allclose(z[:, cont].mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(z[:, cont].std(0), 1, atol=1e-9)
    np.testing.assert_array_equal(
        z[:, pre.feature_names.index("charge")], x[:, pre.feature_names.index("charge")]
    )
    np.testing.assert_allclose(pre.inverse_transform(z), x, rtol=0, atol=1e-12)
    # torch path matches numpy, save/load keeps the stats exactly
    zt = pre.transform(torch.from_numpy(x))
    np.testing.assert_allclose(zt.numpy(), z, atol=1e-12)
    pre.save(tmp_path / "pre.json")
    back = Preprocessing.load(tmp_path / "pre.json")
    assert back.feature_names == pre.feature_names
    np.testing.assert_array_equal(back.mean, pre.mean)
    np.testing.assert_array_equal(back.std, pre.std)


def test_features_to_kinematics_inverts():
    b = make_toy_jets(20, seed=5)
    names = FEATURE_SETS["kin3"]
    x = compute_features(b, names)
    counts = b.counts()
    rep = {k: np.repeat(b.jets[k], counts) for k in ("pt", "eta", "phi")}
    k = features_to_kinematics(x, names, rep["pt"], rep["eta"], rep["phi"])
    np.testing.assert_allclose(k["pt"], b.particles["pt"], rtol=1e-5)
    np.testing.assert_allclose(k["eta"], b.particles["eta"], atol=1e-5)
    dphi = np.angle(np.exp(1j * (k["phi"] - b.particles["phi"])))
    np.testing.assert_allclose(dphi, 0, atol=1e-5)
    np.testing.assert_allclose(k["energy"], b.particles["energy"], rtol=1e-4)


def test_missing_field_and_bad_names():
    b = _one_jet()
    del b.particles["d0"]
    with pytest.raises(InputError, match="'d0'"):
        compute_features(b, FEATURE_SETS["full"])
    with pytest.raises(InputError, match="feature_set"):
        Preprocessing.for_set("kin4")
    with pytest.raises(InputError, match="std"):
        Preprocessing(feature_names=("deta",), mean=np.zeros(1), std=np.zeros(1))
