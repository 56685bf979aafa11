import numpy as np
import pytest

from bertops.evaluation.stats import compare, mcnemar_p, paired_bootstrap_ci


def test_mcnemar_matches_an_independent_exact_binomial_computation():
    from math import comb

    b, c = 12, 4
    n = b + c
    # Two-sided exact p: 2 * P(X <= min(b, c)) for X ~ Binomial(n, 0.5), capped at 1.
    expected = min(1.0, 2 * sum(comb(n, k) for k in range(0, min(b, c) + 1)) / 2**n)
    assert mcnemar_p(b, c) == pytest.approx(expected)
    assert mcnemar_p(0, 0) == 1.0


def test_bootstrap_interval_matches_scipy_bootstrap_on_fixed_data():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(3)
    champion = rng.random(800) < 0.90
    challenger = champion.copy()
    flip = rng.choice(800, 30, replace=False)
    challenger[flip] = ~challenger[flip]
    low, high = paired_bootstrap_ci(challenger, champion, resamples=5000, seed=1)
    ref = bootstrap(
        ((challenger.astype(float) - champion.astype(float)),),
        np.mean,
        n_resamples=5000,
        confidence_level=0.95,
        method="percentile",
        random_state=1,
    ).confidence_interval
    assert low == pytest.approx(ref.low, abs=0.004) and high == pytest.approx(ref.high, abs=0.004)


def test_a_difference_inside_the_noise_straddles_zero():
    """3 examples worse and 2 better out of 872: the CI must hold zero strictly inside it, and
    McNemar must not call it significant (a CI that only touches zero, as when the challenger is
    never better, would not pass)."""
    rng = np.random.default_rng(0)
    champion = rng.random(872) < 0.9
    challenger = champion.copy()
    challenger[np.flatnonzero(champion)[:3]] = False  # 3 examples the champion gets right, lost
    challenger[np.flatnonzero(~champion)[:2]] = True  # 2 it gets wrong, won
    result = compare(challenger, champion)
    assert result.ci_low < 0 < result.ci_high
    assert result.mcnemar_p > 0.05 and result.only_champion_right == 3


def test_a_real_difference_does_not_straddle_zero():
    rng = np.random.default_rng(0)
    champion = rng.random(872) < 0.9
    challenger = champion.copy()
    challenger[np.flatnonzero(champion)[:40]] = False  # 40 of 872 worse: ~4.6 points
    result = compare(challenger, champion)
    assert result.ci_high < 0 and result.mcnemar_p < 0.001


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="equal, non-empty"):
        compare(np.ones(3, bool), np.ones(4, bool))
