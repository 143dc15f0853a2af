"""Settings of one simulated jet sample (:class:`SimulationConfig`).

Everything that changes the physics (tune, MPI/ISR/FSR switches, pT window, jet radius, seed) lives
here and is recorded in the store's manifest, so a sample can be reproduced exactly and a different
tune or shower setting can be used as a "new domain" for transfer studies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jetfm.core.errors import ConfigError
from jetfm.data.schema import JETCLASS_CLASSES

SPLITS: tuple[str, ...] = ("train", "val", "test")
# Pythia's Random:seed accepts 0..900,000,000 (0 means "seed from the clock", which we never want).
MAX_PYTHIA_SEED = 900_000_000

# Fields that do not change the generated jets: a resumed run may change them freely.
RUNTIME_FIELDS = ("workers", "output")


@dataclass
class SimulationConfig:
    """One Pythia 8 + FastJet jet sample.

    ``jets_per_class`` jets of every class in ``classes`` are split into train/val/test by the
    fractions; each split is cut into chunks of at most ``shard_size`` jets, and each chunk is one
    independently seeded Pythia run that writes one shard (the unit of parallelism and of resuming).
    """

    classes: list[str] = field(default_factory=lambda: list(JETCLASS_CLASSES))
    jets_per_class: int = 1000
    pt_min: float = 500.0  # GeV, jet pT window (exclusive bounds)
    pt_max: float = 1000.0
    abs_eta_max: float = 2.0
    jet_radius: float = 0.8  # anti-kT R; also the truth-matching cone
    ecm: float = 13000.0  # GeV, pp centre-of-mass energy
    tune: int = 14  # Pythia Tune:pp (14 = Monash 2013)
    mpi: bool = True  # PartonLevel:MPI
    isr: bool = True  # PartonLevel:ISR
    fsr: bool = True  # PartonLevel:FSR
    hadronize: bool = True  # HadronLevel:Hadronize
    tau0_max: float = 10.0  # mm; particles with c*tau0 below this decay (ParticleDecays:tau0Max)
    pthat_min: float | None = None  # GeV; None: pt_min
    pthat_max: float | None = None  # GeV; None: derived from pt_max (1.1 * pt_max)
    extra_settings: list[str] = field(default_factory=list)  # raw Pythia strings, applied last
    seed: int = 12345
    workers: int = 1
    shard_size: int = 5000  # jets per shard (= per work unit)
    events_per_batch: int = 50  # events per pythia.nextBatch call
    max_events_per_jet: int = 200  # give up on a unit whose efficiency is below 1/this
    train_fraction: float = 0.8
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    output: Path = Path("jetfm-sim")

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.classes = list(self.classes)
        if not self.classes:
            raise ConfigError("at least one class", field="classes", found="[]")
        for name in self.classes:
            if name not in JETCLASS_CLASSES:
                raise ConfigError(
                    f"one of {list(JETCLASS_CLASSES)}", field="classes", found=repr(name)
                )
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError("distinct class names", field="classes", found=self.classes)
        _positive_int(self, "jets_per_class")
        _positive_int(self, "workers")
        _positive_int(self, "shard_size")
        _positive_int(self, "events_per_batch")
        _positive_int(self, "max_events_per_jet")
        if not 0.0 < self.pt_min < self.pt_max:
            raise ConfigError(
                "0 < pt_min < pt_max",
                field="pt_min",
                found=f"pt_min={self.pt_min}, pt_max={self.pt_max}",
            )
        if not 0.0 < self.abs_eta_max <= 5.0:
            raise ConfigError("0 < abs_eta_max <= 5", field="abs_eta_max", found=self.abs_eta_max)
        if not 0.05 <= self.jet_radius <= 2.0:
            raise ConfigError(
                "0.05 <= jet_radius <= 2.0", field="jet_radius", found=self.jet_radius
            )
        if not 2 * self.pt_max < self.ecm:
            raise ConfigError("ecm > 2 * pt_max (GeV)", field="ecm", found=self.ecm)
        if self.tune < 1:
            raise ConfigError("a Pythia Tune:pp number >= 1", field="tune", found=self.tune)
        if self.tau0_max < 0:
            raise ConfigError("tau0_max >= 0 (mm)", field="tau0_max", found=self.tau0_max)
        if not 0 <= self.seed < MAX_PYTHIA_SEED:
            raise ConfigError(f"0 <= seed < {MAX_PYTHIA_SEED}", field="seed", found=self.seed)
        lo, hi = self.pthat_range()
        if not 0 < lo < hi:
            raise ConfigError("0 < pthat_min < pthat_max", field="pthat_min", found=f"{lo}, {hi}")
        for name in ("train_fraction", "val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError("a fraction in [0, 1]", field=name, found=value)
        total = self.train_fraction + self.val_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(
                "train_fraction + val_fraction + test_fraction == 1",
                field="train_fraction",
                found=total,
            )
        for i, s in enumerate(self.extra_settings):
            if not isinstance(s, str) or "=" not in s:
                raise ConfigError(
                    "a Pythia setting 'Key = value'", field=f"extra_settings[{i}]", found=repr(s)
                )

    def pthat_range(self) -> tuple[float, float]:
        """Generator-level pT-hat window.

        Default [pt_min, 1.1 * pt_max]: a jet rarely has more pT than its parton (out-of-cone
        radiation lowers it), so starting at pt_min loses only a few percent of jets at the lower
        edge while keeping about 1.5 QCD jets and 1 top jet per event in the window (0.9 * pt_min
        measured: 1.1 and 0.77). Lower ``pthat_min`` for an unbiased low edge at extra cost.
        """
        lo = self.pt_min if self.pthat_min is None else self.pthat_min
        hi = 1.1 * self.pt_max if self.pthat_max is None else self.pthat_max
        return float(lo), float(hi)

    def fractions(self) -> dict[str, float]:
        return {"train": self.train_fraction, "val": self.val_fraction, "test": self.test_fraction}

    def physics_dict(self) -> dict[str, Any]:
        """The settings that determine the jets (everything except runtime-only fields)."""
        d = dataclasses.asdict(self)
        for name in RUNTIME_FIELDS:
            d.pop(name)
        return d


def _positive_int(cfg: SimulationConfig, name: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("a positive integer", field=name, found=value)
