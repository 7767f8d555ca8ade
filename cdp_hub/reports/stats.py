"""The statistics of a report: uplift over control with confidence intervals, in pure Python.

    conversion:  p = converted / recipients per arm;  uplift = p_variant - p_control
                 two-proportion z-interval: uplift ± z(1 - α/2) · sqrt(p_v(1-p_v)/n_v + p_c(1-p_c)/n_c)
                 (and the pooled two-proportion z-test's p-value for "is there any difference")
    revenue:     mean revenue per recipient per arm (zeros included), sample variance from the sums
                 Welch interval: diff ± t(1 - α/2, ν) · sqrt(s_v²/n_v + s_c²/n_c), ν by Welch–Satterthwaite

The store hands over sums (n, Σx, Σx²), so the variance is (Σx² - (Σx)²/n) / (n - 1). The Student t quantile
comes from the regularized incomplete beta function (continued fraction, as in Numerical Recipes) and a
bisection: no SciPy for one function. Intervals are None when an arm is too small to have one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

__all__ = ["Interval", "conversion_uplift", "revenue_uplift", "student_t_quantile", "variance_from_sums"]


@dataclass(frozen=True, slots=True)
class Interval:
    """An estimate of a difference (variant minus control) and its confidence interval."""

    estimate: float
    low: float
    high: float
    p_value: float | None = None

    @property
    def significant(self) -> bool:
        """Whether the interval leaves out zero."""
        return self.low > 0 or self.high < 0


def conversion_uplift(converted: int, recipients: int, control_converted: int, control_recipients: int,
                      *, confidence: float = 0.95) -> Interval | None:
    """The conversion-rate difference (variant minus control) with its two-proportion z-interval (unpooled
    standard error) and the pooled z-test's two-sided p-value. None when either arm has no recipient."""
    if recipients <= 0 or control_recipients <= 0:
        return None
    p1, p0 = converted / recipients, control_converted / control_recipients
    diff = p1 - p0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    se = math.sqrt(p1 * (1 - p1) / recipients + p0 * (1 - p0) / control_recipients)
    pooled = (converted + control_converted) / (recipients + control_recipients)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / recipients + 1 / control_recipients))
    p_value = 2 * (1 - NormalDist().cdf(abs(diff) / se_pooled)) if se_pooled > 0 else 1.0
    return Interval(diff, diff - z * se, diff + z * se, p_value)


def variance_from_sums(n: int, total: float, squares: float) -> float:
    """The sample variance of ``n`` values from their sum and sum of squares (0 below two values)."""
    if n < 2:
        return 0.0
    return max(0.0, (squares - total * total / n) / (n - 1))


def revenue_uplift(n1: int, total1: float, squares1: float, n0: int, total0: float, squares0: float, *,
                   confidence: float = 0.95) -> Interval | None:
    """The difference in mean revenue per recipient (arm 1 minus control 0) with its Welch interval. None
    when an arm has fewer than two recipients, or both arms have no spread at all."""
    if n1 < 2 or n0 < 2:
        return None
    m1, m0 = total1 / n1, total0 / n0
    v1, v0 = variance_from_sums(n1, total1, squares1) / n1, variance_from_sums(n0, total0, squares0) / n0
    se2 = v1 + v0
    if se2 <= 0:
        return None
    df = se2 * se2 / (v1 * v1 / (n1 - 1) + v0 * v0 / (n0 - 1))
    t = student_t_quantile(0.5 + confidence / 2, df)
    se = math.sqrt(se2)
    diff = m1 - m0
    p_value = 2 * (1 - _student_t_cdf(abs(diff) / se, df))
    return Interval(diff, diff - t * se, diff + t * se, p_value)


def student_t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``df`` degrees of freedom (bisection on the CDF)."""
    if not 0.5 <= p < 1:
        raise ValueError("p must be in [0.5, 1)")
    low, high = 0.0, 1.0
    while _student_t_cdf(high, df) < p:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if _student_t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12:
            break
    return (low + high) / 2


def _student_t_cdf(t: float, df: float) -> float:
    x = df / (df + t * t)
    tail = 0.5 * _regularized_beta(x, df / 2, 0.5)
    return 1 - tail if t >= 0 else tail


def _regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), by the continued fraction on whichever side converges."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(x, a, b) / a
    return 1 - front * _beta_fraction(1 - x, b, a) / b


def _beta_fraction(x: float, a: float, b: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        step = m * (b - m) * x / ((a + m2 - 1) * (a + m2))
        d = 1 + step * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + step / c if abs(1 + step / c) > tiny else tiny
        h *= d * c
        step = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))
        d = 1 + step * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + step / c if abs(1 + step / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return h
