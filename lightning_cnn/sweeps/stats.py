"""Seed statistics: the mean, standard deviation and 95% t interval of a configuration, and a paired comparison."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats as scipy_stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Spread:
    """A metric over seeds: ``mean`` ± ``half_width`` is its 95% confidence interval (t distribution)."""

    values: tuple[float, ...]
    mean: float
    std: float | None  # None for a single run
    half_width: float | None

    def percent(self) -> str:
        """``98.74% ± 0.12 (95% CI [98.62, 98.86], 3 seeds)`` for accuracies."""
        if self.std is None:
            return f"{100 * self.mean:.2f}% (1 run)"
        low, high = 100 * (self.mean - self.half_width), 100 * (self.mean + self.half_width)
        return (
            f"{100 * self.mean:.2f}% ± {100 * self.std:.2f} (95% CI [{low:.2f}, {high:.2f}], {len(self.values)} seeds)"
        )


def spread(values: list[float]) -> Spread:
    """Mean, sample standard deviation and the half width of the 95% t interval of the mean."""
    if not values:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    if len(values) == 1:
        return Spread(tuple(values), mean, None, None)
    std = statistics.stdev(values)
    half_width = scipy_stats.t.ppf((1 + CONFIDENCE) / 2, len(values) - 1) * std / math.sqrt(len(values))
    return Spread(tuple(values), mean, std, float(half_width))


@dataclass(frozen=True)
class Comparison:
    """B minus A over the seeds both ran: the mean paired difference, its 95% interval and the t test's p-value."""

    seeds: tuple[int, ...]
    difference: float
    low: float
    high: float
    p_value: float

    def sentence(self, a: str, b: str, unit: float = 100.0, unit_name: str = "pp") -> str:
        """What a user can act on, e.g. ``B is better by 0.12 pp, 95% CI [0.05, 0.19], p = 0.01 (5 paired seeds)``."""
        seeds = f"{len(self.seeds)} paired seeds"
        if self.low <= 0 <= self.high:
            interval = f"95% CI [{unit * self.low:+.2f}, {unit * self.high:+.2f}]"
            return (
                f"No clear difference: {b} - {a} = {unit * self.difference:+.2f} {unit_name}, {interval}, "
                f"p = {self.p_value:.3g} ({seeds}); the interval includes 0: more seeds are needed to tell them apart"
            )
        # The interval of the better one's lead over the other.
        better, worse, low, high = (b, a, self.low, self.high) if self.difference > 0 else (a, b, -self.high, -self.low)
        return (
            f"{better} is better than {worse} by {unit * abs(self.difference):.2f} {unit_name}, "
            f"95% CI [{unit * low:.2f}, {unit * high:.2f}], p = {self.p_value:.3g} ({seeds})"
        )


def compare_paired(a: dict[int, float], b: dict[int, float]) -> Comparison:
    """Paired t statistics of ``b - a`` over the seeds present in both (at least two)."""
    seeds = tuple(sorted(set(a) & set(b)))
    if len(seeds) < 2:
        raise ValueError(f"{len(seeds)} seeds in common; a paired comparison needs at least 2")
    differences = [b[seed] - a[seed] for seed in seeds]
    mean = statistics.fmean(differences)
    std = statistics.stdev(differences)
    if std == 0:
        return Comparison(seeds, mean, mean, mean, 0.0 if mean != 0 else 1.0)
    half_width = scipy_stats.t.ppf((1 + CONFIDENCE) / 2, len(seeds) - 1) * std / math.sqrt(len(seeds))
    p_value = float(scipy_stats.ttest_rel([b[seed] for seed in seeds], [a[seed] for seed in seeds]).pvalue)
    return Comparison(seeds, mean, mean - half_width, mean + half_width, p_value)
