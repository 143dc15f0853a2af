"""Data: simulation (Pythia 8 + FastJet), readers of public formats, the native store, features, loader."""
