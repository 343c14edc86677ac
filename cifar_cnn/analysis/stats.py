"""The statistics of the report: means over seeds, 95% intervals, Welch's t test of a difference
of means, Holm's adjustment for several tests at once, and the seeds a test would need.

Plain Python (no torch, numpy or scipy): Student's t distribution is computed exactly, its CDF
from the regularized incomplete beta function and its quantiles by inverting the CDF.
docs/statistics.md explains what the report does with these and why.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

ALPHA = 0.05  # two-sided significance level (family-wise where several steps are judged)
POWER = 0.8  # the power a proposed number of seeds should reach
_EPS = 1e-15
_MAX_TERMS = 100_000  # the continued fraction needs about sqrt(df) terms near the mode


# --- Student's t distribution -------------------------------------------------------------------


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz), converging for x < (a+1)/(a+b+2)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, _MAX_TERMS):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < _EPS:
            return fraction
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for 0 <= x <= 1 and a, b > 0."""
    if not 0.0 <= x <= 1.0 or a <= 0 or b <= 0:
        raise ValueError(f"regularized_beta needs 0 <= x <= 1 and a, b > 0 (x={x}, a={a}, b={b})")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + a * math.log(x) + b * math.log1p(-x)
    )  # fmt: skip
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` > 0 degrees of freedom (any real df)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * regularized_beta(df / (df + t * t), df / 2.0, 0.5)  # P(T > |t|)
    return tail if t >= 0 else 1.0 - tail


def _invert_tail(tail: Callable[[float], float], q: float) -> float:
    """The x >= 0 where the decreasing `tail` (tail(0) = 0.5) equals q in (0, 0.5]:
    bracketed by doubling, then bisected to the last bit."""
    low, high = 0.0, 1.0
    while tail(high) > q:
        low, high = high, 2.0 * high
    while True:
        middle = 0.5 * (low + high)
        if middle in (low, high):
            return middle
        low, high = (middle, high) if tail(middle) > q else (low, middle)


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p for Student's t with `df` > 0 (any real df): t(0.975, 2) =
    4.3027. Found by bisection on the upper tail, so tiny tail probabilities stay exact."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if p == 0.5:
        return 0.0
    x = _invert_tail(lambda t: t_sf(t, df), min(p, 1.0 - p))
    return x if p > 0.5 else -x


# --- summaries and tests ------------------------------------------------------------------------


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
        half = t_quantile(1 - ALPHA / 2, n - 1) * sd / math.sqrt(n)
        return cls(n, statistics.fmean(values), sd, half)

    @property
    def standard_error(self) -> float | None:
        return None if self.sd is None else self.sd / math.sqrt(self.n)

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% interval, clipped to [0, 1] (a recall lies there); None below two values."""
        if self.half_width is None:
            return None
        return max(0.0, self.mean - self.half_width), min(1.0, self.mean + self.half_width)


def welch_df(sd1: float, n1: int, sd2: float, n2: int) -> float:
    """The Welch-Satterthwaite degrees of freedom of a difference of two means (not an
    integer); n1 + n2 - 2 when neither side varies (the limit of equal spreads)."""
    v1, v2 = sd1 * sd1 / n1, sd2 * sd2 / n2
    if v1 + v2 == 0:
        return float(n1 + n2 - 2)
    return (v1 + v2) ** 2 / (v1 * v1 / (n1 - 1) + v2 * v2 / (n2 - 1))


@dataclass(frozen=True)
class Welch:
    """Welch's t test of mean(a) - mean(b): two-sided p-value and 95% interval."""

    diff: float
    standard_error: float
    df: float
    p_value: float
    low: float  # the 95% interval of the difference (for this one comparison)
    high: float


def welch(a: Summary, b: Summary) -> Welch:
    """Welch's unequal-variance t test of mean(a) - mean(b); both need two or more values."""
    if a.sd is None or b.sd is None:
        raise ValueError("Welch's test needs two or more values on each side")
    diff = a.mean - b.mean
    se = math.hypot(a.standard_error, b.standard_error)
    df = welch_df(a.sd, a.n, b.sd, b.n)
    if se == 0:  # neither side varies: any difference is beyond the (zero) noise
        return Welch(diff, 0.0, df, 1.0 if diff == 0 else 0.0, diff, diff)
    p = 2.0 * t_sf(abs(diff) / se, df)
    half = t_quantile(1 - ALPHA / 2, df) * se
    return Welch(diff, se, df, min(1.0, p), diff - half, diff + half)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the k-th smallest of m is
    multiplied by (m - k + 1), kept no smaller than the one before it, capped at 1."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def decide(diff: float, p_value: float, claimed: float | None) -> str:
    """The verdict on a claim that a difference has the sign of `claimed`: `holds` or
    `reversed` when p_value <= ALPHA, else `within noise`. Without a claim (a row with no
    published number): `better` or `worse` than the parent when p_value <= ALPHA."""
    if p_value > ALPHA:
        return "within noise"
    if claimed is None:
        return "better" if diff > 0 else "worse"
    return "holds" if diff * claimed > 0 else "reversed"


def fmt_p(p_value: float | None) -> str:
    """A p-value as the reports write it: `0.0123`, `< 0.0001`; an en dash when there is none."""
    if p_value is None:
        return "–"
    return "< 0.0001" if p_value < 1e-4 else f"{p_value:.4f}"


def untestable(mine: Summary, theirs: Summary, claimed: float | None) -> str | None:
    """Why mine cannot be tested against theirs (no run, or one seed on a side), else None;
    with a claimed difference, whether the untested one points the same way."""
    if mine.n == 0 or theirs.n == 0:
        return "no finished runs to compare"
    if mine.sd is None or theirs.sd is None:
        if claimed is None:
            return "cannot judge: one seed"
        direction = "same" if (mine.mean - theirs.mean) * claimed > 0 else "opposite"
        return f"cannot judge: one seed ({direction} direction)"
    return None


def pooled_sd(a: Summary, b: Summary) -> float:
    """The pooled standard deviation of two groups of two or more values each."""
    return math.sqrt(((a.n - 1) * a.sd**2 + (b.n - 1) * b.sd**2) / (a.n + b.n - 2))


def seeds_to_resolve(diff: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Seeds per side for a two-sided two-sample t test at `alpha` to detect `diff` with
    `power` when each seed's spread is `sd`: the smallest n >= 2 with
    |diff| / (sd * sqrt(2/n)) >= t(1 - alpha/2, 2n-2) + t(power, 2n-2)
    (the shifted-t approximation of the noncentral t; its t quantiles grow as n shrinks,
    so it asks for more seeds than the normal formula). Found by doubling, then bisection."""
    if diff == 0:
        raise ValueError("no number of seeds resolves a difference of zero")

    def enough(n: int) -> bool:
        df = 2 * n - 2
        needed = t_quantile(1 - alpha / 2, df) + t_quantile(power, df)
        return abs(diff) * math.sqrt(n / 2) >= needed * sd

    low, high = 1, 2  # enough(low) is false by convention: one seed has no spread
    while not enough(high):
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high
