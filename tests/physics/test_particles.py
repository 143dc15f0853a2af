"""PDG id -> charge and JetClass-style flags."""

import numpy as np
import pytest

from jetfm.physics.particles import (
    PARTICLE_TYPES,
    is_charged_hadron,
    is_electron,
    is_known_pdg_id,
    is_muon,
    is_neutral_hadron,
    is_photon,
    particle_type_flags,
    pdg_charge,
)

# (pid, charge, flags in PARTICLE_TYPES order)
CASES = [
    (211, 1, (1, 0, 0, 0, 0)),  # pi+
    (-211, -1, (1, 0, 0, 0, 0)),  # pi-
    (321, 1, (1, 0, 0, 0, 0)),  # K+
    (-321, -1, (1, 0, 0, 0, 0)),  # K-
    (2212, 1, (1, 0, 0, 0, 0)),  # p
    (-2212, -1, (1, 0, 0, 0, 0)),  # pbar
    (2112, 0, (0, 1, 0, 0, 0)),  # n
    (-2112, 0, (0, 1, 0, 0, 0)),  # nbar
    (130, 0, (0, 1, 0, 0, 0)),  # K_L
    (310, 0, (0, 1, 0, 0, 0)),  # K_S
    (3122, 0, (0, 1, 0, 0, 0)),  # Lambda
    (3222, 1, (1, 0, 0, 0, 0)),  # Sigma+
    (3112, -1, (1, 0, 0, 0, 0)),  # Sigma-
    (-3112, 1, (1, 0, 0, 0, 0)),  # anti-Sigma-
    (3312, -1, (1, 0, 0, 0, 0)),  # Xi-
    (3322, 0, (0, 1, 0, 0, 0)),  # Xi0
    (3334, -1, (1, 0, 0, 0, 0)),  # Omega-
    (-3334, 1, (1, 0, 0, 0, 0)),  # anti-Omega
    (22, 0, (0, 0, 1, 0, 0)),  # photon
    (11, -1, (0, 0, 0, 1, 0)),  # e-
    (-11, 1, (0, 0, 0, 1, 0)),  # e+
    (13, -1, (0, 0, 0, 0, 1)),  # mu-
    (-13, 1, (0, 0, 0, 0, 1)),  # mu+
    (12, 0, (0, 0, 0, 0, 0)),  # nu_e: no flag
    (-16, 0, (0, 0, 0, 0, 0)),  # anti-nu_tau
]
PIDS = np.array([c[0] for c in CASES])


def test_charges():
    charge = pdg_charge(PIDS)
    assert charge.dtype == np.int8
    np.testing.assert_array_equal(charge, [c[1] for c in CASES])


def test_flags_match_table_and_accessors():
    flags = particle_type_flags(PIDS)
    assert flags.shape == (len(CASES), 5) and flags.dtype == bool
    np.testing.assert_array_equal(flags, np.array([c[2] for c in CASES], dtype=bool))
    accessors = (is_charged_hadron, is_neutral_hadron, is_photon, is_electron, is_muon)
    assert len(accessors) == len(PARTICLE_TYPES)
    for k, fn in enumerate(accessors):
        np.testing.assert_array_equal(fn(PIDS), flags[:, k], err_msg=PARTICLE_TYPES[k])
    # at most one flag per particle
    assert flags.sum(axis=1).max() == 1


def test_float_flags_and_2d_input():
    flags = particle_type_flags(np.array([[211, 22], [11, 2112]]), dtype=np.float32)
    assert flags.shape == (2, 2, 5) and flags.dtype == np.float32
    np.testing.assert_array_equal(flags[1, 1], [0, 1, 0, 0, 0])


def test_integer_valued_floats_are_accepted_fractions_are_not():
    np.testing.assert_array_equal(pdg_charge(np.array([211.0, -11.0])), [1, 1])
    with pytest.raises(ValueError, match="integers"):
        pdg_charge(np.array([211.5]))


def test_unknown_ids_raise_or_fall_back():
    with pytest.raises(ValueError, match=r"unknown PDG id\(s\) \[9999999\]"):
        pdg_charge(np.array([211, 9999999]))
    np.testing.assert_array_equal(is_known_pdg_id([211, 9999999, -3334]), [True, False, True])
    np.testing.assert_array_equal(pdg_charge([211, 9999999], strict=False), [1, 0])
    # an unknown hadron-like id is a neutral hadron under the fallback; an unknown small id sets no flag
    flags = particle_type_flags([9999999, 99], strict=False)
    np.testing.assert_array_equal(flags, [[0, 1, 0, 0, 0], [0, 0, 0, 0, 0]])


def test_empty_input():
    assert pdg_charge(np.zeros(0, dtype=np.int32)).shape == (0,)
    assert particle_type_flags(np.zeros(0, dtype=np.int32)).shape == (0, 5)
