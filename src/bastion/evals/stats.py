"""Statistics for repeated, sampled evaluations: intervals, pass@k, flakiness and paired comparisons.

Pure Python (no numpy/scipy), deterministic: every random procedure takes a fixed seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

Z95 = NormalDist().inv_cdf(0.975)  # 1.959963984540054
EXACT_MAX_STATES = 1 << 18  # beyond EXACT_MAX_PAIRS: exact while the distribution has at most this many sums
EXACT_MAX_PAIRS = 20  # ... and always exact up to this many non-zero pairs (2^20 sign patterns)
MC_DRAWS = 20_000
MC_SEED = 20_240_601
BOOTSTRAP_DRAWS = 5_000
_EPS = 1e-9  # float slack when comparing statistics (differences are ratios like 3/5 - 1)


def z_for(confidence: float) -> float:
    """The two-sided normal quantile for ``confidence`` (0.95 -> 1.96)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when there are no trials."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in 0..{n}, not {successes}")
    return _wilson(successes / n, n, z)


def case_icc(cases: Sequence[tuple[int, int]]) -> float:
    """Intra-case correlation of pass/fail outcomes from per-case ``(passes, samples)``: the one-way ANOVA
    estimator (unequal sizes through the usual n0), clipped to [0, 1]. 1 when it cannot be estimated (a single
    case, one sample per case, or no variation at all): the cautious assumption that a case's samples are
    one observation."""
    rows = [(x, m) for x, m in cases if m > 0]
    k, n = len(rows), sum(m for _, m in rows)
    if k < 2 or n <= k:
        return 1.0
    p = sum(x for x, _ in rows) / n
    ssb = sum(m * (x / m - p) ** 2 for x, m in rows)
    ssw = sum(x * (1 - x / m) for x, m in rows)  # sum over samples of (y - case mean)^2
    msb, msw = ssb / (k - 1), ssw / (n - k)
    n0 = (n - sum(m * m for _, m in rows) / n) / (k - 1)
    denom = msb + (n0 - 1) * msw
    if denom <= 0:
        return 1.0
    return min(1.0, max(0.0, (msb - msw) / denom))


def clustered_wilson(cases: Sequence[tuple[int, int]], z: float = Z95) -> tuple[float, float, float, float]:
    """Wilson interval of the pass rate over samples that come in cases: the samples of one case are
    correlated (a prompt that fails an input tends to fail all its samples), so the interval uses the
    effective sample size n / design effect, with design effect 1 + (mean samples per case - 1) * ICC
    (Kish). Returns (low, high, effective n, ICC). Independent samples give the plain Wilson interval over
    all samples; fully case-determined outcomes give the interval over the number of cases."""
    rows = [(x, m) for x, m in cases if m > 0]
    n = sum(m for _, m in rows)
    if n == 0:
        return (0.0, 1.0, 0.0, 1.0)
    icc = case_icc(rows)
    n_eff = n / (1 + (n / len(rows) - 1) * icc)
    lo, hi = _wilson(sum(x for x, _ in rows) / n, n_eff, z)
    return lo, hi, n_eff, icc


def _wilson(p: float, n: float, z: float) -> tuple[float, float]:
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k: the chance that at least one of k samples drawn from n (c correct) passes."""
    _check_nck(n, c, k)
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """pass^k: the chance that all k samples drawn from n (c correct) pass, C(c,k)/C(n,k)."""
    _check_nck(n, c, k)
    return math.comb(c, k) / math.comb(n, k)


def _check_nck(n: int, c: int, k: int) -> None:
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")


def is_flaky(passes: int, n: int) -> bool:
    """A case is flaky when it passed some samples and failed others."""
    return 0 < passes < n


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class SignFlip:
    p_value: float
    method: str  # "exact" or "monte-carlo"
    nonzero: int


def sign_flip_test(diffs: Sequence[float], *, draws: int = MC_DRAWS, seed: int = MC_SEED) -> SignFlip:
    """Two-sided paired permutation test: under H0 each difference's sign is a fair coin.

    The statistic is the sum of the differences; p = P(|T| >= |t_obs|). Zero differences carry no
    information and are dropped. Exact (by counting the sign patterns through the distribution of
    partial sums) when there are at most EXACT_MAX_PAIRS non-zero pairs or the distinct sums stay few,
    which they do for pass-rate differences; otherwise Monte Carlo with a fixed seed.
    """
    d = [float(x) for x in diffs if abs(x) > _EPS]
    if not d:
        return SignFlip(1.0, "exact", 0)
    observed = abs(sum(d))
    exact = _exact_p(d, always=len(d) <= EXACT_MAX_PAIRS)
    if exact is not None:
        return SignFlip(exact, "exact", len(d))
    rng = random.Random(seed)
    hits = 0
    for _ in range(draws):
        t = sum(x if rng.random() < 0.5 else -x for x in d)
        if abs(t) >= observed - _EPS:
            hits += 1
    return SignFlip((hits + 1) / (draws + 1), "monte-carlo", len(d))


def _exact_p(d: list[float], *, always: bool) -> float | None:
    scale = 1e6  # sums are counted on an integer grid, fine enough for ratios of small integers
    steps = [round(x * scale) for x in d]
    observed = abs(sum(steps))
    dist: dict[int, int] = {0: 1}
    for step in steps:
        nxt: dict[int, int] = {}
        for s, c in dist.items():
            nxt[s + step] = nxt.get(s + step, 0) + c
            nxt[s - step] = nxt.get(s - step, 0) + c
        dist = nxt
        if not always and len(dist) > EXACT_MAX_STATES:
            return None
    extreme = sum(c for s, c in dist.items() if abs(s) >= observed)
    return min(1.0, extreme / 2 ** len(d))


def bootstrap_mean_ci(
    values: Sequence[float], *, confidence: float = 0.95, draws: int = BOOTSTRAP_DRAWS, seed: int = MC_SEED
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (resampling the values; fixed seed)."""
    xs = list(values)
    if not xs:
        return (0.0, 0.0)
    if max(xs) - min(xs) < _EPS:
        return (xs[0], xs[0])
    rng = random.Random(seed)
    n = len(xs)
    means = sorted(sum(rng.choices(xs, k=n)) / n for _ in range(draws))
    tail = (1 - confidence) / 2
    lo = means[max(0, math.floor(tail * draws))]
    hi = means[min(draws - 1, math.ceil((1 - tail) * draws) - 1)]
    return (lo, hi)


@dataclass(frozen=True)
class Comparison:
    """Candidate minus baseline, paired by case."""

    baseline: str
    candidate: str
    n_pairs: int
    mean_diff: float
    ci: tuple[float, float]
    p_value: float
    method: str
    nonzero: int
    alpha: float

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    def regression(self, max_regression: float) -> bool:
        """A significant drop larger than ``max_regression``."""
        return self.significant and self.mean_diff < -max_regression - _EPS

    def as_dict(self, max_regression: float | None = None) -> dict[str, object]:
        out: dict[str, object] = {
            "baseline": self.baseline, "candidate": self.candidate, "n_pairs": self.n_pairs,
            "mean_diff": self.mean_diff, "ci": list(self.ci), "p_value": self.p_value, "method": self.method,
            "nonzero_pairs": self.nonzero, "alpha": self.alpha, "significant": self.significant,
        }
        if max_regression is not None:
            out["max_regression"] = max_regression
            out["regression"] = self.regression(max_regression)
        return out


def compare_paired(
    baseline: dict[str, float], candidate: dict[str, float], *, alpha: float = 0.01,
    names: tuple[str, str] = ("baseline", "candidate"),
) -> Comparison:
    """Compare per-case pass rates of two variants over the cases both have."""
    common = [k for k in baseline if k in candidate]
    diffs = [candidate[k] - baseline[k] for k in common]
    test = sign_flip_test(diffs)
    mean = sum(diffs) / len(diffs) if diffs else 0.0
    return Comparison(names[0], names[1], len(diffs), mean, bootstrap_mean_ci(diffs), test.p_value, test.method,
                      test.nonzero, alpha)
