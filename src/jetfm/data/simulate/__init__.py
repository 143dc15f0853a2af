"""Embedded real-physics data source: Pythia 8 events, FastJet anti-kT jets, JetClass-style labels.

``simulate(SimulationConfig(...))`` writes a sharded native store (see :mod:`jetfm.data.store`);
``summarize``/``format_summary`` give a per-class sanity table (multiplicity, plain and soft-drop
jet-mass peaks).
"""

from jetfm.data.simulate.config import SPLITS, SimulationConfig
from jetfm.data.simulate.generator import generate_jets, impact_parameters
from jetfm.data.simulate.processes import PROCESSES
from jetfm.data.simulate.runner import WorkUnit, plan_units, simulate, unit_seed
from jetfm.data.simulate.summary import format_summary, mass_peak, summarize

__all__ = [
    "PROCESSES",
    "SPLITS",
    "SimulationConfig",
    "WorkUnit",
    "format_summary",
    "generate_jets",
    "impact_parameters",
    "mass_peak",
    "plan_units",
    "simulate",
    "summarize",
    "unit_seed",
]
