"""Whole-number shares of a total: one rounding rule for every place that splits jets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def largest_remainder(n: int, quotas: Sequence[float]) -> list[int]:
    """Integers summing to ``n`` from real ``quotas`` (which sum to ``n``): each gets its quota's
    whole part, and the leftover units go to the largest fractional parts (ties: first first).

    Why: rounding each quota alone can over- or under-shoot ``n`` (three thirds of 10 round to 9).
    """
    q = np.asarray(quotas, dtype=np.float64)
    out = np.floor(q).astype(np.int64)
    rest = n - int(out.sum())
    out[np.argsort(-(q - out), kind="stable")[:rest]] += 1
    return [int(v) for v in out]
