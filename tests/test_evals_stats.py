"""Statistics against hand-computed values."""

from __future__ import annotations

import math
import random

import pytest

from bastion.evals import stats


def test_wilson_known_values() -> None:
    lo, hi = stats.wilson(8, 10)
    assert lo == pytest.approx(0.4901624, abs=1e-6)
    assert hi == pytest.approx(0.9433178, abs=1e-6)
    lo, hi = stats.wilson(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.2775328, abs=1e-6)
    lo, hi = stats.wilson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7224672, abs=1e-6)
    assert stats.wilson(0, 0) == (0.0, 1.0)
    # 99% interval is wider
    assert stats.wilson(8, 10, stats.z_for(0.99))[0] < 0.4901624
    assert stats.z_for(0.95) == pytest.approx(1.959964, abs=1e-6)
    with pytest.raises(ValueError):
        stats.wilson(11, 10)


def test_pass_at_k_and_pass_hat_k() -> None:
    assert stats.pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert stats.pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # 1 - C(3,3)/C(5,3)
    assert stats.pass_at_k(5, 2, 4) == 1.0  # fewer than 4 failures: any 4 include a pass
    assert stats.pass_at_k(5, 0, 5) == 0.0
    assert stats.pass_at_k(10, 3, 2) == pytest.approx(1 - math.comb(7, 2) / math.comb(10, 2))
    assert stats.pass_hat_k(5, 2, 2) == pytest.approx(0.1)  # C(2,2)/C(5,2)
    assert stats.pass_hat_k(5, 5, 5) == 1.0
    assert stats.pass_hat_k(5, 4, 5) == 0.0
    assert stats.pass_hat_k(5, 3, 1) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        stats.pass_at_k(5, 2, 6)


def test_flaky() -> None:
    assert stats.is_flaky(2, 5)
    assert not stats.is_flaky(0, 5)
    assert not stats.is_flaky(5, 5)


def test_percentile() -> None:
    assert stats.percentile([], 50) is None
    assert stats.percentile([1, 2, 3, 4], 50) == 2.5
    assert stats.percentile([10.0], 95) == 10.0
    assert stats.percentile(list(range(101)), 95) == 95


@pytest.mark.parametrize("n", [1, 3, 5, 10, 20, 25, 40])
def test_sign_flip_all_positive_is_two_over_two_to_the_n(n: int) -> None:
    r = stats.sign_flip_test([0.2] * n)
    assert r.method == "exact"
    assert r.p_value == pytest.approx(2 / 2**n, rel=1e-12)
    assert r.nonzero == n


def test_sign_flip_hand_computed() -> None:
    # [2, 1, 1]: |T| >= 4 only for all + or all - : 2/8
    assert stats.sign_flip_test([2, 1, 1]).p_value == pytest.approx(0.25)
    # [1, 1, -1]: every pattern has |T| >= 1
    assert stats.sign_flip_test([1, 1, -1]).p_value == pytest.approx(1.0)
    # [3, 1, 1, 1], T = 6: |T| >= 6 only all same -> 2/16; zeros are dropped
    assert stats.sign_flip_test([3, 1, 0, 1, 1, 0]).p_value == pytest.approx(2 / 16)
    # [1, 1, 1, -1]: T = 2; |T| >= 2 for the 2 patterns with sum ±4 and the 8 with sum ±2 -> 10/16
    assert stats.sign_flip_test([1, 1, 1, -1]).p_value == pytest.approx(10 / 16)
    # [0.2, 0.4, -0.2], T = 0.4: the sums are ±0.8 (2), ±0.4 (4), 0 (2) -> 6/8
    assert stats.sign_flip_test([0.2, 0.4, -0.2]).p_value == pytest.approx(6 / 8)
    assert stats.sign_flip_test([]).p_value == 1.0
    assert stats.sign_flip_test([0.0, 0.0]).p_value == 1.0


def test_sign_flip_monte_carlo_beyond_exact_range() -> None:
    rng = random.Random(1)
    diffs = [0.5 + rng.random() for _ in range(30)]  # 30 arbitrary values: too many distinct sums to count
    r = stats.sign_flip_test(diffs)
    assert r.method == "monte-carlo"
    assert r.p_value == pytest.approx(1 / (stats.MC_DRAWS + 1))  # the true p is 2/2^30
    assert stats.sign_flip_test(diffs) == r  # fixed seed: reproducible
    mixed = [d * (1 if i % 2 else -1) for i, d in enumerate(diffs)]
    assert stats.sign_flip_test(mixed).p_value > 0.5


def test_bootstrap_ci() -> None:
    assert stats.bootstrap_mean_ci([0.2] * 10) == (0.2, 0.2)
    assert stats.bootstrap_mean_ci([]) == (0.0, 0.0)
    xs = [0.0, -0.2, -0.4, 0.0, -0.2, 0.0, -0.6, -0.2, 0.0, -0.2]
    lo, hi = stats.bootstrap_mean_ci(xs)
    mean = sum(xs) / len(xs)
    assert lo < mean < hi
    assert -0.6 <= lo and hi <= 0.0
    assert stats.bootstrap_mean_ci(xs) == (lo, hi)


def test_compare_paired_and_regression() -> None:
    base = {f"c{i}": 1.0 for i in range(10)}
    cand = {f"c{i}": 0.6 for i in range(10)}
    cmp = stats.compare_paired(base, cand, alpha=0.01)
    assert cmp.n_pairs == 10 and cmp.nonzero == 10
    assert cmp.mean_diff == pytest.approx(-0.4)
    assert cmp.p_value == pytest.approx(2 / 2**10)
    assert cmp.significant and cmp.regression(0.05)
    assert not cmp.regression(0.5)  # a drop within the tolerance is not a regression
    better = stats.compare_paired(cand, base, alpha=0.01)
    assert better.significant and not better.regression(0.05)
    # only common cases are paired
    assert stats.compare_paired({"a": 1.0, "b": 1.0}, {"a": 0.0}).n_pairs == 1
    d = cmp.as_dict(0.05)
    assert d["regression"] is True and d["method"] == "exact"


def test_case_icc_hand_computed() -> None:
    # p_i = 1, 0, 1/2 over 2 samples each: SSB = 1, SSW = 1/2, MSB = 1/2, MSW = 1/6, n0 = 2 -> ICC = 1/2
    assert stats.case_icc([(2, 2), (0, 2), (1, 2)]) == pytest.approx(0.5)
    assert stats.case_icc([(5, 5)] * 10) == 1.0  # no variation: cannot be estimated, assume the worst
    assert stats.case_icc([(1, 1), (0, 1)]) == 1.0  # one sample per case: no within-case information
    assert stats.case_icc([(3, 6), (3, 6), (3, 6)]) == 0.0  # all variation inside cases (clipped at 0)


def test_clustered_wilson_between_cases_and_samples() -> None:
    # every case passes or fails all its samples: 50 observations, not 250
    lo, hi, n_eff, icc = stats.clustered_wilson([(5, 5)] * 45 + [(0, 5)] * 5)
    assert (n_eff, icc) == (50.0, 1.0) and (lo, hi) == pytest.approx(stats.wilson(45, 50))
    assert lo < stats.wilson(225, 250)[0] - 0.05  # the naive interval would claim far more
    # variation only inside cases: the plain interval over all samples
    lo, hi, n_eff, icc = stats.clustered_wilson([(3, 6)] * 20)
    assert (n_eff, icc) == (120.0, 0.0) and (lo, hi) == pytest.approx(stats.wilson(60, 120))
    # in between: n / (1 + (m - 1) * ICC) = 6 / 1.5
    assert stats.clustered_wilson([(2, 2), (0, 2), (1, 2)])[2] == pytest.approx(4.0)
    assert stats.clustered_wilson([]) == (0.0, 1.0, 0.0, 1.0)


def test_min_lower_bound_gate_counts_cases_not_samples(tmp_path) -> None:
    """A prompt that always fails 10% of the inputs: 0.9 over 250 samples looks like a lower bound of 0.857,
    but it is 45 of 50 inputs (lower bound 0.786), so a 0.85 gate must fail."""
    import asyncio

    from bastion.evals import evaluate, load_suite
    from tests.test_evals_fakes import VALID, json_suite, reply, write_suite

    suite = json_suite(gate={"min_lower_bound": 0.85})
    suite["variants"] = suite["variants"][:1]

    async def send(body, headers):
        broken = any(f"question {i}" in str(body.get("messages")) for i in range(45, 50))
        return reply("not json" if broken else VALID)

    doc = asyncio.run(evaluate(load_suite(write_suite(tmp_path, suite)), transport=send, concurrency=8,
                               use_embeddings=False))
    (v,) = doc["variants"]
    assert v["pass_rate"] == pytest.approx(0.9) and v["case_icc"] == 1.0 and v["ci_effective_n"] == 50.0
    assert v["ci"][0] == pytest.approx(stats.wilson(45, 50)[0])
    assert not doc["gate"]["passed"]
