"""Pythia processes and forced decays for the ten JetClass-style jet classes.

Every boosted resonance needs something to recoil against so that it reaches the jet pT window:

* Higgs classes: H + parton via gluon fusion with the full top-mass loop (``HiggsSM:*(l:t)``). We use H
  + jet rather than ZH with Z -> nu nu because the H -> WW*/ZZ* classes would need the Z (or W) decay
  table both forced to neutrinos (recoil) and to quarks (Higgs decay), which Pythia cannot do for
  the same particle species.
* Z -> qq and W -> qq': W/Z + parton (``WeakBosonAndParton``), pure Z (no gamma*).
* Tops: ttbar with both W decays forced the same way (both hadronic for Tbqq, both leptonic for Tbl),
  which doubles the number of usable top jets per event; the other top only changes the event far
  away from the jet.
* QCD: ``HardQCD:all`` (light and heavy quarks, gluons).

PhaseSpace:pTHat{Min,Max} are set from the jet pT window (see SimulationConfig.pthat_range), so
almost every event produces a candidate jet. Leptons in W decays are e and mu only (tau excluded).
"""

from __future__ import annotations

from dataclasses import dataclass

from jetfm.data.simulate.config import SimulationConfig

_QUARKS = "1 2 3 4 5"
_HIGGS_PLUS_JET = (
    "HiggsSM:gg2Hg(l:t) = on",
    "HiggsSM:qg2Hq(l:t) = on",
    "HiggsSM:qqbar2Hg(l:t) = on",
)
_TTBAR = ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on")


@dataclass(frozen=True)
class ProcessSpec:
    """How to generate one class and what its truth-level decay must look like.

    ``resonance``: |PDG id| of the particle whose decay products define a signal jet (0 = QCD, no
    matching). ``n_quarks``/``n_leptons``/``n_gluons``: the visible decay products required (after
    following intermediate W/Z); candidates with another content are skipped (used for H -> l nu qq',
    where W decays are left free between leptons and quarks and the mixed final state is selected).
    """

    settings: tuple[str, ...]
    resonance: int = 0
    n_quarks: int = 0
    n_leptons: int = 0
    n_gluons: int = 0


PROCESSES: dict[str, ProcessSpec] = {
    "QCD": ProcessSpec(("HardQCD:all = on",)),
    "Hbb": ProcessSpec(
        (*_HIGGS_PLUS_JET, "25:onMode = off", "25:onIfMatch = 5 -5"), resonance=25, n_quarks=2
    ),
    "Hcc": ProcessSpec(
        (*_HIGGS_PLUS_JET, "25:onMode = off", "25:onIfMatch = 4 -4"), resonance=25, n_quarks=2
    ),
    "Hgg": ProcessSpec(
        (*_HIGGS_PLUS_JET, "25:onMode = off", "25:onIfMatch = 21 21"), resonance=25, n_gluons=2
    ),
    "H4q": ProcessSpec(
        (
            *_HIGGS_PLUS_JET,
            "25:onMode = off",
            "25:onIfMatch = 24 -24",
            "25:onIfMatch = 23 23",
            "24:onMode = off",
            f"24:onIfAny = {_QUARKS}",
            "23:onMode = off",
            f"23:onIfAny = {_QUARKS}",
        ),
        resonance=25,
        n_quarks=4,
    ),
    "Hqql": ProcessSpec(
        (
            *_HIGGS_PLUS_JET,
            "25:onMode = off",
            "25:onIfMatch = 24 -24",
            "24:onMode = off",
            f"24:onIfAny = {_QUARKS} 11 13",
        ),
        resonance=25,
        n_quarks=2,
        n_leptons=1,
    ),
    "Zqq": ProcessSpec(
        (
            "WeakBosonAndParton:qqbar2gmZg = on",
            "WeakBosonAndParton:qg2gmZq = on",
            "WeakZ0:gmZmode = 2",
            "23:onMode = off",
            f"23:onIfAny = {_QUARKS}",
        ),
        resonance=23,
        n_quarks=2,
    ),
    "Wqq": ProcessSpec(
        (
            "WeakBosonAndParton:qqbar2Wg = on",
            "WeakBosonAndParton:qg2Wq = on",
            "24:onMode = off",
            f"24:onIfAny = {_QUARKS}",
        ),
        resonance=24,
        n_quarks=2,
    ),
    "Tbqq": ProcessSpec(
        (*_TTBAR, "24:onMode = off", f"24:onIfAny = {_QUARKS}"), resonance=6, n_quarks=3
    ),
    "Tbl": ProcessSpec(
        (*_TTBAR, "24:onMode = off", "24:onIfAny = 11 13"), resonance=6, n_quarks=1, n_leptons=1
    ),
}


def pythia_settings(cfg: SimulationConfig, class_name: str, seed: int) -> list[str]:
    """All Pythia strings for one work unit (beam, tune, switches, process, seed, quiet output)."""
    lo, hi = cfg.pthat_range()
    onoff = {True: "on", False: "off"}
    return [
        "Print:quiet = on",
        "Next:numberCount = 0",
        f"Beams:eCM = {cfg.ecm}",
        f"Tune:pp = {cfg.tune}",
        f"PartonLevel:MPI = {onoff[cfg.mpi]}",
        f"PartonLevel:ISR = {onoff[cfg.isr]}",
        f"PartonLevel:FSR = {onoff[cfg.fsr]}",
        f"HadronLevel:Hadronize = {onoff[cfg.hadronize]}",
        "ParticleDecays:limitTau0 = on",
        f"ParticleDecays:tau0Max = {cfg.tau0_max}",
        f"PhaseSpace:pTHatMin = {lo}",
        f"PhaseSpace:pTHatMax = {hi}",
        *PROCESSES[class_name].settings,
        *cfg.extra_settings,
        "Random:setSeed = on",
        f"Random:seed = {seed}",
    ]
