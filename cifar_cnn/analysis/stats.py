"""The statistics of the report: means over seeds, 95% intervals, and whether a difference
of means exceeds the seed-to-seed noise. Plain Python: no torch, no numpy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# A difference of means counts as real when it exceeds NOISE_FACTOR x its standard error.
NOISE_FACTOR = 2.0
# Two-sided 95% quantiles of Student's t distribution, t(0.975, df); 1.960 beyond the table.
T_975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
    17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
    25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000,
    120: 1.980,
}  # fmt: skip


def t_quantile(df: int) -> float:
    """t(0.975, df), from the table (the next smaller tabulated df: a slightly wider interval)."""
    if df < 1:
        raise ValueError("a t interval needs at least two values")
    return T_975[max(k for k in T_975 if k <= df)] if df <= max(T_975) else 1.960


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and 95% interval half-width of a few values."""

    n: int
    mean: float | None
    sd: float | None  # None with fewer than two values
    half_width: float | None  # t(0.975, n-1) * sd / sqrt(n)

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """The summary of `values` (no spread below two values, no mean without any)."""
        n = len(values)
        if n < 2:
            return cls(n, float(values[0]) if n else None, None, None)
        sd = statistics.stdev(values)
        return cls(n, statistics.fmean(values), sd, t_quantile(n - 1) * sd / math.sqrt(n))

    @property
    def standard_error(self) -> float | None:
        return None if self.sd is None else self.sd / math.sqrt(self.n)

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% interval, clipped to [0, 1] (a recall lies there); None below two values."""
        if self.half_width is None:
            return None
        return max(0.0, self.mean - self.half_width), min(1.0, self.mean + self.half_width)


def compare(
    mine: Summary, theirs: Summary, claimed: float
) -> tuple[float | None, float | None, str]:
    """mean(mine) - mean(theirs), its noise threshold (NOISE_FACTOR x its standard error) and
    the verdict on a claim that the difference has the sign of `claimed`: holds, reversed,
    within noise, or cannot be judged."""
    if mine.n == 0 or theirs.n == 0:
        return None, None, "no finished runs to compare"
    diff = mine.mean - theirs.mean
    if mine.sd is None or theirs.sd is None:
        direction = "same" if diff * claimed > 0 else "opposite"
        return diff, None, f"cannot judge: one seed ({direction} direction)"
    threshold = NOISE_FACTOR * math.hypot(mine.standard_error, theirs.standard_error)
    if abs(diff) <= threshold:
        return diff, threshold, "within noise"
    return diff, threshold, "holds" if diff * claimed > 0 else "reversed"
