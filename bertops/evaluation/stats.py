"""Paired statistics for champion/challenger comparisons on the same evaluation examples.

Pure numpy/scipy functions over per-example correctness vectors (1 = the model was right):
a paired bootstrap confidence interval of the accuracy difference and McNemar's test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedComparison:
    difference: float  # challenger accuracy - champion accuracy
    ci_low: float
    ci_high: float
    confidence: float
    mcnemar_p: float  # two-sided; small = the models disagree more than chance
    only_challenger_right: int  # b: examples only the challenger got right
    only_champion_right: int  # c: examples only the champion got right
    examples: int


def paired_bootstrap_ci(
    challenger: np.ndarray, champion: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI of mean(challenger) - mean(champion), resampling examples (pairs stay together)."""
    diff = np.asarray(challenger, dtype=np.float64) - np.asarray(champion, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def paired_bootstrap_statistic(
    statistic, examples: int, confidence: float = 0.95, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI of `statistic(indices)`, a difference of two models' figures computed on the
    same resampled examples (e.g. two Spearman correlations with the same gold scores)."""
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, examples, size=examples)) for _ in range(resamples)])
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))


def mcnemar_p(only_challenger_right: int, only_champion_right: int) -> float:
    """Exact two-sided McNemar test (binomial on the discordant pairs); 1.0 when they never disagree."""
    from scipy.stats import binomtest

    discordant = only_challenger_right + only_champion_right
    if discordant == 0:
        return 1.0
    return float(binomtest(only_challenger_right, discordant, 0.5, alternative="two-sided").pvalue)


def compare(
    challenger: np.ndarray, champion: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> PairedComparison:
    challenger = np.asarray(challenger, dtype=bool)
    champion = np.asarray(champion, dtype=bool)
    if challenger.shape != champion.shape or challenger.ndim != 1 or len(challenger) == 0:
        raise ValueError(
            f"need two equal, non-empty 1-D correctness vectors, got {challenger.shape} and {champion.shape}"
        )
    b = int((challenger & ~champion).sum())
    c = int((~challenger & champion).sum())
    low, high = paired_bootstrap_ci(challenger, champion, confidence, resamples, seed)
    return PairedComparison(
        float(challenger.mean() - champion.mean()), low, high, confidence, mcnemar_p(b, c), b, c, len(challenger)
    )
