"""Pure, vectorised physics functions on NumPy arrays (or anything array-like).

Jagged inputs are flat per-particle arrays plus ``offsets`` (n_jets + 1), as stored on disk. The
package imports nothing of jetfm but the error types of :mod:`jetfm.core.errors`, so it can be used
(and tested against FastJet) on its own. The functions physicists reach for most are re-exported
here; the modules hold the rest.
"""

from jetfm.physics.efp import efp
from jetfm.physics.grooming import softdrop
from jetfm.physics.jets import jet_four_momentum
from jetfm.physics.kinematics import (
    delta_phi,
    delta_r,
    invariant_mass,
    ptetaphi_to_pxpypz,
    pxpypz_to_ptetaphi,
    wrap_phi,
)
from jetfm.physics.observables import check_offsets, constituent_features, nsubjettiness

__all__ = [
    "check_offsets",
    "constituent_features",
    "delta_phi",
    "delta_r",
    "efp",
    "invariant_mass",
    "jet_four_momentum",
    "nsubjettiness",
    "ptetaphi_to_pxpypz",
    "pxpypz_to_ptetaphi",
    "softdrop",
    "wrap_phi",
]
