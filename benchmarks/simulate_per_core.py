"""Per-core simulation speed: jets per CPU-second of one in-process generator (Pythia 8 + FastJet +
jetfm's processing, Pythia init included), at the issue's reference pT-hat window (550-650 GeV) and
at jetfm's default window (500-1100 GeV). CPU time, so other load on the machine does not count.

    python benchmarks/simulate_per_core.py
"""

import time

from jetfm.data.simulate import SimulationConfig, generate_jets

for cls in ("QCD", "Tbqq"):
    for lo, hi in ((550.0, 650.0), (None, None)):
        cfg = SimulationConfig(classes=[cls], jets_per_class=600, pthat_min=lo, pthat_max=hi)
        t = time.process_time()
        b, st = generate_jets(cfg, cls, 600, seed=3)
        dt = time.process_time() - t
        print(
            f"{cls:5s} pthat={cfg.pthat_range()} jets={b.n_jets} CPU-s={dt:.1f} jets/CPU-s={b.n_jets / dt:.1f} (incl. Pythia init)",
            flush=True,
        )
