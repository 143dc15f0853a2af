"""Pure, vectorised physics functions on NumPy arrays (or anything array-like). Imports nothing of jetfm."""
