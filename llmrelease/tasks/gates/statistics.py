"""Gate statistics: non-inferiority with power, clusters, exact paired tests, multiplicity, sequences.

Pure: numpy, scipy and statsmodels only; no server, no MLflow, no Prefect. Every function is
deterministic for a given seed, and no result carries NaN: degenerate inputs (one item, all
differences equal, one cluster) get the documented answers below.

Conventions
- ``diffs`` are per-item differences ``d_i = candidate_i - champion_i`` on the same items.
- ``direction`` is the metric's: ``"higher"`` (higher is better, a regression is ``d < 0``; the gate
  forbids ``mean(d) < -margin``) or ``"lower"`` (the mirror: the gate forbids ``mean(d) > margin``).
  Internally everything is computed on the *improvement* ``e = d`` (higher) or ``e = -d`` (lower), so
  that one code path serves both; results are reported on ``d`` again.
- ``confidence`` is one-sided: a gate at 0.95 lets at most 5% of candidates whose true difference
  sits exactly at the margin pass. The display interval ``[ci_low, ci_high]`` is the two-sided interval
  at level ``2 * confidence - 1`` (90% for 0.95), so the deciding bound is one of its ends.

Verdicts of a comparison (``paired_comparison``), on the improvement ``e``:
- PASS when the one-sided lower bound of ``mean(e)`` is at least ``-margin``: non-inferiority is
  shown, whatever the power. (Promotion's error is the rate of PASS among candidates at the margin;
  only this branch can promote, so the other branches do not touch that guarantee.)
- FAIL when the bound does not clear ``-margin`` and either the test had the power to clear it
  (``mde <= margin``: an equal candidate would have passed with probability ``power``) or the data
  show the regression outright (the one-sided *upper* bound is below ``-margin``: demonstrably worse
  than the margin allows, however few items there are).
- INCONCLUSIVE otherwise: the bound does not clear, the evalset is too small to have cleared it for
  an equal candidate (``mde > margin``), and the data remain compatible with an acceptable
  candidate. It never promotes; ``items_needed`` says how many items would make the gate decisive.
This is the rule of a power analysis done after the fact, but only to *label* a non-pass (was it
underpowered?), never to turn a non-pass into a pass: the classical objection to post-hoc power
(Hoenig & Heisey 2001, "The abuse of power", Am. Stat. 55(1)) is about reading a non-significant
result as evidence of no effect, which INCONCLUSIVE explicitly refuses to do. The MDE is computed
from the design (n, sd, design effect), not from the observed delta.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Literal

import numpy as np

__all__ = [
    "BinaryPairedTest",
    "Comparison",
    "ConfidenceSequence",
    "GroupSequentialTest",
    "HolmAdjusted",
    "HolmResult",
    "binary_paired_test",
    "holm",
    "holm_adjust",
    "mean_bound",
    "mean_bounds",
    "paired_comparison",
    "proportion_bound",
    "sequential_decision",
    "spending_boundary",
]

Direction = Literal["higher", "lower"]
Side = Literal["lower", "upper"]
Verdict = Literal["pass", "fail", "inconclusive"]


def _stats() -> ModuleType:
    """scipy.stats, imported on first use: it costs ~0.5 s, and the CLI imports the gates."""
    from scipy import stats

    return stats


def _check_direction(direction: str) -> None:
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")


def _check_confidence(confidence: float, name: str = "confidence") -> None:
    if not 0.5 < confidence < 1:
        raise ValueError(f"{name} must be in (0.5, 1), got {confidence!r}")


# ------------------------------------------------------------------------------- bootstrap machinery


def _cluster_index(clusters: Sequence[object] | np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray(clusters)
    if labels.shape != (n,):
        raise ValueError(f"clusters must give one label per item: {n} items, got shape {labels.shape}")
    _, index = np.unique(labels, return_inverse=True)
    return index.reshape(-1)


def _bootstrap_means(values: np.ndarray, index: np.ndarray | None, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap distribution of the mean: items resampled (scipy), or whole clusters resampled.

    The cluster bootstrap resamples clusters with replacement and takes the mean over all items of
    the resampled clusters (a ratio of sums, so clusters of unequal size weigh by their size): the
    "cluster bootstrap" of Field & Welsh (2007), "Bootstrapping clustered data", JRSS-B 69(3),
    369-390, section 3.1 (randomness at the cluster level). It keeps the within-cluster correlation
    in every resample, which an item bootstrap destroys (Miller 2024, "Adding Error Bars to Evals",
    arXiv:2411.00640, section 2.3 on clustered standard errors).
    """
    rng = np.random.default_rng(seed)
    if index is None:
        res = _stats().bootstrap(
            (values,),
            np.mean,
            n_resamples=resamples,
            method="percentile",
            random_state=rng,
            vectorized=True,
            batch=max(1, min(resamples, 2_000_000 // values.size)),
        )
        return np.asarray(res.bootstrap_distribution, dtype=float)
    sums = np.bincount(index, weights=values)
    sizes = np.bincount(index).astype(float)
    g = sums.size
    out = np.empty(resamples)
    batch = max(1, min(resamples, 2_000_000 // g))
    for start in range(0, resamples, batch):
        stop = min(resamples, start + batch)
        draw = rng.integers(0, g, size=(stop - start, g))
        out[start:stop] = sums[draw].sum(axis=1) / sizes[draw].sum(axis=1)
    return out


def _expanded_level(confidence: float, units: int) -> float:
    """Quantile level of the *expanded* percentile bootstrap bound at one-sided ``confidence``.

    A plain percentile bootstrap of a mean is too narrow in small samples: its spread is that of a
    variance with divisor n (not n-1) and its tails are normal (not t). Hesterberg (2015), "What
    teachers should know about the bootstrap", Am. Stat. 69(4), 371-386, section 5.3 ("expanded
    percentile interval"), fixes both by taking the quantile at ``Phi(-sqrt(m/(m-1)) * t_{m-1,c})``
    instead of ``1 - c``, where m is the number of independent units (items, or clusters when items
    are clustered: the cluster count is what the df of a clustered mean depend on).
    """
    k = math.sqrt(units / (units - 1))
    return float(_stats().norm.cdf(-k * _stats().t.ppf(confidence, units - 1)))


def _bounds(draws: np.ndarray, confidence: float, units: int) -> tuple[float, float]:
    """(one-sided lower, one-sided upper) bound at ``confidence`` from a bootstrap distribution."""
    a = _expanded_level(confidence, units)
    lo, hi = np.quantile(draws, [a, 1 - a])
    return float(lo), float(hi)


def _p_value(draws: np.ndarray, null: float, units: int) -> float:
    """One-sided p-value for H0: mean <= null, inverted from the expanded percentile bound.

    u is the bootstrap mass at or below the null (ties count half), kept within [1/(2B), 1-1/(2B)]
    so that B resamples never claim p = 0. The bound clears the null at level alpha exactly when
    ``u <= Phi(-k t_{m-1,1-alpha})``, i.e. when ``t_{m-1}.cdf(Phi^-1(u) / k) <= alpha``: so p <= alpha
    if and only if the bound at 1 - alpha clears, up to the granularity of B resamples.
    """
    b = draws.size
    u = (np.count_nonzero(draws < null) + 0.5 * np.count_nonzero(draws == null)) / b
    u = min(max(u, 0.5 / b), 1 - 0.5 / b)
    k = math.sqrt(units / (units - 1))
    return float(_stats().t.cdf(_stats().norm.ppf(u) / k, units - 1))


def _multiplier(confidence: float, power: float, df: float) -> float:
    """Bloom's MDE multiplier ``t_{df,c} + t_{df,power}`` (Bloom 1995, "Minimum detectable effects",
    Evaluation Review 19(5), 547-556, eq. 1): a true effect this many standard errors beyond the
    null is detected with probability ``power`` by a one-sided test at ``confidence``."""
    return float(_stats().t.ppf(confidence, df) + _stats().t.ppf(power, df))


# ------------------------------------------------------------------------------- paired comparison


@dataclass(frozen=True)
class Comparison:
    """A non-inferiority comparison of per-item differences ``candidate - champion``.

    All values are on ``d = candidate - champion`` (not flipped for lower-is-better metrics), so
    ``delta`` reads the same in every report. Floats are never NaN; ``mde`` is ``inf`` only when
    nothing can be estimated (fewer than 2 items or clusters).
    """

    n: int
    """Paired items."""
    clusters: int
    """Distinct clusters (equal to ``n`` when items are independent)."""
    delta: float
    """Mean of d."""
    margin: float
    """Non-inferiority margin (>= 0) in the metric's unit."""
    direction: Direction
    confidence: float
    """One-sided confidence of ``bound``."""
    bound: float
    """The deciding one-sided bound at ``confidence``: lower bound of delta for higher-is-better
    metrics (must be >= -margin), upper bound for lower-is-better ones (must be <= margin)."""
    ci_low: float
    ci_high: float
    """Two-sided interval at ``ci_level`` = 2 * confidence - 1; ``bound`` is one of its ends."""
    ci_level: float
    p_value: float
    """One-sided, for H0: the true delta is the regression the margin forbids (-margin for
    higher-is-better, +margin for lower-is-better) or worse, vs H1: better than that."""
    se_naive: float
    """sd(d) / sqrt(n): the standard error if items were independent."""
    se_cluster: float
    """Cluster-robust standard error (CR1); equals ``se_naive`` without clusters."""
    design_effect: float
    """se_cluster**2 / se_naive**2; 1.0 without clusters (below 1 when clusters are negatively
    correlated inside)."""
    effective_n: float
    """n / design_effect: the number of independent items worth as much as these."""
    sd: float
    """Sample standard deviation of d (ddof=1)."""
    power: float
    mde: float
    """Minimum detectable effect: how far above the forbidden regression the true delta must lie to
    be shown non-inferior with probability ``power`` (so ``mde <= margin`` means an equal candidate
    passes with at least that probability)."""
    items_needed: int | None
    """Items (in total, at this sd and design effect) for ``mde <= margin``; None when no number
    suffices (margin 0 with varying differences: that asks to prove superiority)."""
    verdict: Verdict
    reason: str
    """One sentence: why this verdict."""
    method: str
    """How the bound was computed."""
    resamples: int
    seed: int
    _draws: np.ndarray | None = field(default=None, repr=False, compare=False)
    """Bootstrap distribution of the mean *improvement* (d, or -d for lower-is-better)."""

    @property
    def units(self) -> int:
        """Independent units the bootstrap and the df rest on: clusters (= n without clusters)."""
        return self.clusters

    def at(self, confidence: float) -> Comparison:
        """The same comparison judged at another one-sided confidence (same resamples): what a
        multiplicity correction uses. ``p_value`` does not change."""
        _check_confidence(confidence)
        return _finish(
            n=self.n,
            units=self.units,
            delta=self.delta,
            margin=self.margin,
            direction=self.direction,
            confidence=confidence,
            power=self.power,
            sd=self.sd,
            se_naive=self.se_naive,
            se_cluster=self.se_cluster,
            draws=self._draws,
            p_value=self.p_value,
            method=self.method,
            resamples=self.resamples,
            seed=self.seed,
        )


def paired_comparison(
    diffs: Sequence[float] | np.ndarray,
    *,
    margin: float,
    direction: Direction = "higher",
    clusters: Sequence[object] | np.ndarray | None = None,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    power: float = 0.8,
) -> Comparison:
    """Non-inferiority of a candidate against the champion on the same items, with its power.

    The bound is an expanded percentile bootstrap bound (Hesterberg 2015, see ``_expanded_level``):
    items are resampled with ``scipy.stats.bootstrap``, or, when ``clusters`` labels are given (one
    per item: the conversation, source document or user an item came from), whole clusters are
    resampled (Field & Welsh 2007). The p-value inverts the same bound. The design effect compares
    the cluster-robust variance of the mean (CR1: ``G/(G-1) * sum_g (sum_{i in g} e_i)^2 / n^2``,
    the clustered standard error of Miller 2024, section 2.3) with the naive ``sd^2 / n``. The MDE
    is Bloom's ``(t_c + t_power) * se`` with ``df = units - 1`` (see ``_multiplier``).

    Degenerate inputs: no items raises ValueError. Fewer than 2 items (or 2 clusters): no variance
    can be estimated, the interval collapses to the point, ``mde = inf``, ``p_value = 1`` and the
    verdict is INCONCLUSIVE (never PASS on one unit). All differences equal (sd 0, or every cluster
    mean equal so the cluster variance is 0): the bootstrap has nothing to resample, so the bound is
    the exact binomial one of ``_no_variation`` (a point interval would pass 10 ties at any margin).
    """
    _check_direction(direction)
    _check_confidence(confidence)
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power!r}")
    if not margin >= 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100, got {resamples!r}")
    d = np.asarray(diffs, dtype=float).reshape(-1)
    n = d.size
    if n == 0:
        raise ValueError("no paired items: nothing to compare")
    if not np.all(np.isfinite(d)):
        raise ValueError("diffs must be finite numbers (a NaN or inf score cannot be compared)")
    index = None if clusters is None else _cluster_index(clusters, n)
    units = n if index is None else int(index.max()) + 1
    delta = float(d.mean())
    e = d if direction == "higher" else -d
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    se_naive = sd / math.sqrt(n)
    if index is None or units < 2:
        se_cluster = se_naive
    else:
        resid_sums = np.bincount(index, weights=d - delta)
        se_cluster = math.sqrt(units / (units - 1) * float(np.sum(resid_sums**2))) / n
    method = "expanded percentile bootstrap" + (" over clusters" if index is not None else "")
    draws = None
    p_value = None
    if units >= 2 and se_cluster > 0:
        draws = _bootstrap_means(e, index, resamples, seed)
        p_value = _p_value(draws, -margin, units)
    return _finish(
        n=n,
        units=units,
        delta=delta,
        margin=float(margin),
        direction=direction,
        confidence=confidence,
        power=power,
        sd=sd,
        se_naive=se_naive,
        se_cluster=se_cluster,
        draws=draws,
        p_value=p_value,
        method=method,
        resamples=resamples,
        seed=seed,
    )


def _no_variation(
    improvement: float, margin: float, confidence: float, units: int, n: int
) -> tuple[float, float, float, float, int | None]:
    """Bounds when every unit's improvement equals ``improvement`` (e.g. identical outputs on every
    item): (lower, upper, p, mde, items_needed) on the improvement scale.

    The bootstrap has nothing to resample here and would return the point, which passes a gate
    on 72 ties at any margin: overconfident. With per-item scores in [0, 1] each difference lies in
    [-1, 1], so the population mean is at worst ``e - (1 + e) r`` where ``r`` is the share of
    units that differ from ``e``; seeing 0 of ``units`` differ bounds it by Clopper-Pearson,
    ``r <= 1 - alpha ** (1 / units)`` (about 3 / units, the "rule of three"). The p-value inverts
    the same bound; the MDE is ``r`` itself (the regression an equal candidate could hide)."""
    alpha = 1 - confidence
    r = 1 - alpha ** (1 / units)
    lo = improvement - (1 + improvement) * r
    hi = improvement + (1 - improvement) * r
    if improvement <= -margin:
        p = 1.0
    else:
        r0 = min(1.0, (improvement + margin) / (1 + improvement))
        p = float((1 - r0) ** units)
    needed = None if margin <= 0 else math.floor(math.log(alpha) / math.log1p(-margin)) + 1
    if needed is not None:
        needed = max(2, math.ceil(needed * n / units))
    return lo, hi, p, r, needed


def _items_needed(
    sd: float, deff: float, margin: float, n: int, units: int, c: float, pw: float
) -> int | None:
    """Smallest total N with ``M(df_N) * sd * sqrt(deff / N) <= margin`` at the current mean cluster
    size (df_N = N / size - 1), found by fixed-point iteration from the normal approximation."""
    if sd == 0 or deff == 0:
        return 2
    if margin == 0:
        return None
    size = n / units
    z = float(_stats().norm.ppf(c) + _stats().norm.ppf(pw))
    need = max(2, math.ceil(deff * (z * sd / margin) ** 2))
    for _ in range(20):  # t multipliers shrink as N grows: converges in a few steps
        df = max(1.0, need / size - 1)
        nxt = max(2, math.ceil(deff * (_multiplier(c, pw, df) * sd / margin) ** 2 - 1e-9))
        if nxt == need:
            break
        need = nxt
    return max(need, math.ceil(2 * size))


def _finish(
    *,
    n: int,
    units: int,
    delta: float,
    margin: float,
    direction: Direction,
    confidence: float,
    power: float,
    sd: float,
    se_naive: float,
    se_cluster: float,
    draws: np.ndarray | None,
    p_value: float | None,
    method: str,
    resamples: int,
    seed: int,
) -> Comparison:
    improvement = delta if direction == "higher" else -delta
    if units < 2:
        lo_e = hi_e = improvement
        mde, needed, deff, p = math.inf, None, 1.0, 1.0
        verdict: Verdict = "inconclusive"
        what = "item" if units == n else "cluster"
        reason = f"only {units} {what}: no variance can be estimated, so nothing is shown"
        method = "none (fewer than 2 units)"
    elif draws is None:  # no variation at the level the bootstrap resamples
        lo_e, hi_e, p, mde, needed = _no_variation(improvement, margin, confidence, units, n)
        deff = (se_cluster / se_naive) ** 2 if se_naive > 0 else 1.0
        what = "difference" if units == n else "cluster mean"
        method = "exact binomial bound (every unit equal)"
        if lo_e > -margin:
            verdict, reason = "pass", f"every {what} is equal, and {units} of them bound a hidden regression"
        elif hi_e < -margin:
            verdict, reason = "fail", f"every {what} is equal and beyond the margin: a regression is shown"
        elif mde <= margin:
            verdict = "fail"
            reason = f"every {what} is equal; the bound misses the margin, which an equal candidate clears"
        else:
            verdict = "inconclusive"
            reason = (
                f"every {what} is equal, but {units} units cannot rule out a regression of {mde:.4f} "
                f"hiding in items not drawn (> margin {margin:.4f}); about {needed} items would"
                if needed is not None
                else f"every {what} is equal; a margin of 0 is passed only by a proven improvement"
            )
    else:
        lo_e, hi_e = _bounds(draws, confidence, units)
        deff = (se_cluster / se_naive) ** 2 if se_naive > 0 else 1.0
        mde = _multiplier(confidence, power, units - 1) * se_cluster
        needed = _items_needed(sd, deff, margin, n, units, confidence, power)
        p = float(p_value) if p_value is not None else 1.0
        if lo_e > -margin:  # strictly: H0 includes delta = -margin, and means of 0/1 scores hit it
            verdict, reason = "pass", "the bound clears the margin: non-inferiority is shown"
        elif hi_e < -margin:
            verdict, reason = "fail", "even the opposite bound is beyond the margin: a regression is shown"
        elif mde <= margin:
            verdict = "fail"
            reason = f"the bound misses the margin although the test had {power:.0%} power (mde <= margin)"
        else:
            verdict = "inconclusive"
            reason = (
                f"the bound misses the margin, but the evalset is too small to show it (mde {mde:.4f} > "
                f"margin {margin:.4f}); about {needed} items would be"
                if needed is not None
                else "the bound misses a margin of 0: only a proven improvement passes such a gate"
            )
    if direction == "higher":
        bound, ci_low, ci_high = lo_e, lo_e, hi_e
    else:
        bound, ci_low, ci_high = -lo_e, -hi_e, -lo_e
    effective_n = n / deff if deff > 0 else math.inf
    return Comparison(
        n=n,
        clusters=units,
        delta=delta,
        margin=margin,
        direction=direction,
        confidence=confidence,
        bound=bound,
        ci_low=ci_low,
        ci_high=ci_high,
        ci_level=2 * confidence - 1,
        p_value=p,
        se_naive=se_naive,
        se_cluster=se_cluster,
        design_effect=deff,
        effective_n=effective_n,
        sd=sd,
        power=power,
        mde=mde,
        items_needed=needed,
        verdict=verdict,
        reason=reason,
        method=method,
        resamples=resamples,
        seed=seed,
        _draws=draws,
    )


# ------------------------------------------------------------------------------- binary scores


@dataclass(frozen=True)
class BinaryPairedTest:
    """An exact (margin 0) or score (margin > 0) test on the discordant pairs of 0/1 scores."""

    n: int
    wins: int
    """Items the candidate gets right and the champion wrong (the better way for ``direction``)."""
    losses: int
    """Items the candidate gets wrong and the champion right (a regression for ``direction``)."""
    ties: int
    delta: float
    """(wins - losses) / n on the improvement scale: mean(d) for higher, -mean(d) for lower."""
    margin: float
    statistic: float
    """Tango's Z (margin > 0), or the number of wins (margin 0, exact)."""
    p_value: float
    """One-sided, H0: true improvement <= -margin vs H1: better than that."""
    p_value_two_sided: float | None
    """McNemar's exact two-sided p (statsmodels) for margin 0; None otherwise."""
    method: str


def binary_paired_test(
    cand: Sequence[float] | np.ndarray,
    champ: Sequence[float] | np.ndarray,
    *,
    margin: float,
    direction: Direction = "higher",
) -> BinaryPairedTest:
    """Paired test for 0/1 scores: small evalsets get an exact answer where one exists.

    Margin 0: McNemar's exact conditional test. Given the discordant pairs, wins ~ Binomial(wins +
    losses, 1/2) under H0; the one-sided p is P(W >= wins) (``scipy.stats.binomtest``), and
    statsmodels' ``mcnemar(exact=True)`` supplies the two-sided p for display. No discordant pair:
    p = 1.

    Margin > 0: no conditional exact test exists (under H0 the discordant split is not a fixed
    binomial), so this is the score test of Tango (1998), "Equivalence test and confidence interval
    for the difference in proportions for the paired-sample design", Stat. Med. 17(8), 891-908,
    eq. (3) (the same statistic as Nam 1997, Biometrics 53, 1422-1430). With theta = p_win - p_loss
    and H0: theta = -margin, the restricted MLE of p_loss solves the quadratic derived from the
    multinomial likelihood, ``2n x^2 - (w(1-t) + l(1-3t) - 2mt) x - l t (1-t) = 0`` (t = -margin,
    w wins, l losses, m ties), and ``Z = (w - l + n margin) / sqrt(n (2 x + t - t^2))``; p = 1 -
    Phi(Z). At margin 0 it reduces to McNemar's (w - l) / sqrt(w + l). Tango reports its size close
    to nominal from n = 50 on; smaller n should rely on margin 0's exact test or the bootstrap.
    """
    _check_direction(direction)
    if not margin >= 0 or margin >= 1:
        raise ValueError(f"margin must be in [0, 1) for 0/1 scores, got {margin!r}")
    a = np.asarray(cand, dtype=float).reshape(-1)
    b = np.asarray(champ, dtype=float).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"cand and champ must pair item by item: {a.size} vs {b.size} scores")
    if a.size == 0:
        raise ValueError("no paired items: nothing to compare")
    if not (np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all()):
        raise ValueError("binary_paired_test needs 0/1 scores; use paired_comparison for other scores")
    if direction == "lower":
        a, b = b, a  # a rise is the regression: the candidate "wins" where it is 0 and the champion 1
    n = a.size
    wins = int(np.count_nonzero((a == 1) & (b == 0)))
    losses = int(np.count_nonzero((a == 0) & (b == 1)))
    ties = n - wins - losses
    delta = (wins - losses) / n
    if margin == 0:
        from statsmodels.stats.contingency_tables import mcnemar

        disc = wins + losses
        if disc == 0:
            return BinaryPairedTest(n, wins, losses, ties, 0.0, 0.0, 0.0, 1.0, 1.0, "no discordant pairs")
        p1 = float(_stats().binomtest(wins, disc, 0.5, alternative="greater").pvalue)
        table = [[0, wins], [losses, 0]]
        p2 = float(mcnemar(table, exact=True).pvalue)
        return BinaryPairedTest(
            n, wins, losses, ties, delta, 0.0, float(wins), p1, p2, "McNemar exact (conditional binomial)"
        )
    t = -float(margin)
    x = _tango_restricted_loss(wins, losses, n, t)
    var = n * (2 * x + t - t * t)
    z = (
        (wins - losses - n * t) / math.sqrt(var)
        if var > 0
        else math.copysign(math.inf, wins - losses - n * t)
    )
    p = float(_stats().norm.sf(z))
    return BinaryPairedTest(
        n, wins, losses, ties, delta, float(margin), float(z), p, None, "Tango score test (non-inferiority)"
    )


def _tango_restricted_loss(wins: int, losses: int, n: int, t: float) -> float:
    """Restricted MLE of p_loss under p_win - p_loss = t (see ``binary_paired_test``): the root of
    the quadratic inside the feasible range [max(0, -t), (1 - t) / 2]."""
    m = n - wins - losses
    qa = 2.0 * n
    qb = -(wins * (1 - t) + losses * (1 - 3 * t) - 2 * m * t)
    qc = -losses * t * (1 - t)
    disc = max(0.0, qb * qb - 4 * qa * qc)
    lo, hi = max(0.0, -t), (1 - t) / 2
    roots = [(-qb + s * math.sqrt(disc)) / (2 * qa) for s in (1.0, -1.0)]
    feasible = [r for r in roots if lo - 1e-12 <= r <= hi + 1e-12]
    return min(max(feasible[0] if feasible else roots[0], lo), hi)


# ------------------------------------------------------------------------------- absolute gates


def proportion_bound(
    k: int,
    n: int,
    *,
    confidence: float = 0.95,
    side: Side = "lower",
    method: Literal["wilson", "exact"] = "wilson",
) -> float:
    """One-sided confidence bound on a rate k/n, for an absolute gate that applies its threshold to
    the bound (``min`` on the lower bound, ``max`` on the upper one).

    ``statsmodels.stats.proportion.proportion_confint`` at two-sided level ``2c - 1``, whose ends
    are the one-sided bounds at c. Wilson (score) intervals hold their level well from small n on;
    ``exact`` is Clopper-Pearson (``method="beta"``), conservative, never below nominal. The lower
    bound at k = 0 is 0 and the upper bound at k = n is 1.
    """
    _check_confidence(confidence)
    if side not in ("lower", "upper"):
        raise ValueError(f"side must be 'lower' or 'upper', got {side!r}")
    if method not in ("wilson", "exact"):
        raise ValueError(f"method must be 'wilson' or 'exact', got {method!r}")
    if not (isinstance(n, int | np.integer) and n >= 1 and 0 <= k <= n):
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k!r}, n={n!r}")
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(
        int(k), int(n), alpha=2 * (1 - confidence), method="wilson" if method == "wilson" else "beta"
    )
    lo = 0.0 if k == 0 else float(lo)
    hi = 1.0 if k == n else float(hi)
    return min(max(lo if side == "lower" else hi, 0.0), 1.0)


def mean_bound(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    side: Side = "lower",
    seed: int = 0,
    resamples: int = 2000,
    clusters: Sequence[object] | np.ndarray | None = None,
) -> float:
    """One side of :func:`mean_bounds`."""
    if side not in ("lower", "upper"):
        raise ValueError(f"side must be 'lower' or 'upper', got {side!r}")
    lo, hi = mean_bounds(values, confidence=confidence, seed=seed, resamples=resamples, clusters=clusters)
    return lo if side == "lower" else hi


def mean_bounds(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    seed: int = 0,
    resamples: int = 2000,
    clusters: Sequence[object] | np.ndarray | None = None,
) -> tuple[float, float]:
    """(lower, upper) one-sided confidence bounds on the mean of per-item scores (e.g. ROUGE-L),
    each at ``confidence``, for an absolute gate on a bound: the expanded percentile bootstrap of
    ``paired_comparison``, seeded, by cluster when ``clusters`` are given; one set of resamples
    serves both sides. For 0/1 scores prefer ``proportion_bound``. Fewer than 2 units or no
    variation: the exact binomial bound of a share of units that could differ (scores in [0, 1]),
    as in ``_no_variation``; never the point itself."""
    _check_confidence(confidence)
    v = np.asarray(values, dtype=float).reshape(-1)
    if v.size == 0:
        raise ValueError("no values: nothing to bound")
    if not np.all(np.isfinite(v)):
        raise ValueError("values must be finite numbers")
    index = None if clusters is None else _cluster_index(clusters, v.size)
    units = v.size if index is None else int(index.max()) + 1
    mean = float(v.mean())
    constant = units < 2 or bool(np.all(v == v[0]))
    if not constant and index is not None:
        cluster_means = np.bincount(index, weights=v) / np.bincount(index)
        constant = bool(np.all(cluster_means == cluster_means[0]))  # every resample has this mean
    if constant:  # nothing to resample: the exact binomial bound for scores in [0, 1]
        r = 1 - (1 - confidence) ** (1 / units)
        return max(0.0, mean * (1 - r)), min(1.0, mean + (1 - mean) * r)
    return _bounds(_bootstrap_means(v, index, resamples, seed), confidence, units)


# ------------------------------------------------------------------------------- multiplicity


@dataclass(frozen=True)
class HolmResult:
    adjusted: tuple[float, ...]
    """Holm-adjusted p-values, in the input order."""
    reject: tuple[bool, ...]
    """H0 rejected (for a non-inferiority gate: non-inferiority shown) at family-wise level alpha."""
    alpha: float


def holm(p_values: Sequence[float], alpha: float = 0.05) -> HolmResult:
    """Holm's step-down procedure (Holm 1979, "A simple sequentially rejective multiple test
    procedure", Scand. J. Statist. 6, 65-70): controls the family-wise error rate at ``alpha`` under
    any dependence. Adjusted p_(i) = max_{j <= i} min(1, (k - j + 1) p_(j)); reject where <= alpha.

    The same arithmetic as ``statsmodels.stats.multitest.multipletests(method="holm")`` (the tests
    check them against each other), written out because statsmodels 0.15 runs a full
    ``gc.collect()`` inside every Holm call: ~40 ms in a process that has pandas loaded, which
    dominates a Monte Carlo over thousands of gate families and is wasted in a release.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    p = np.asarray(p_values, dtype=float).reshape(-1)
    if p.size == 0:
        return HolmResult((), (), alpha)
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(p, kind="stable")
    steps = np.arange(p.size, 0, -1)
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(p[order] * steps))
    adjusted = np.empty_like(adjusted_sorted)
    adjusted[order] = adjusted_sorted
    return HolmResult(tuple(float(x) for x in adjusted), tuple(bool(x <= alpha) for x in adjusted), alpha)


@dataclass(frozen=True)
class HolmAdjusted:
    """One comparison gate of a Holm family."""

    raw: Comparison
    """The gate judged alone, at 1 - alpha."""
    adjusted: Comparison
    """The gate judged at ``1 - level``: its bound is the adjusted bound shown in the table."""
    level: float
    """The one-sided error level this gate is judged at (see ``holm_adjust``)."""
    p_adjusted: float
    passed: bool
    """Holm rejects this gate's H0 (non-inferiority shown for the family)."""


def holm_adjust(comparisons: Sequence[Comparison], alpha: float = 0.05) -> list[HolmAdjusted]:
    """Holm over a family of comparison gates, with an adjusted bound and verdict per gate.

    Order the raw p-values p_(1) <= ... <= p_(k). Holm passes gates (1)..(r) while p_(i) <=
    alpha / (k - i + 1), and stops at the first that misses. A passed gate (i) is shown at its step
    level alpha / (k - i + 1); every gate not passed is shown at the level where the procedure
    stopped, alpha / (k - r). Because each p-value inverts its bound, an adjusted bound clears the
    margin exactly for the gates Holm passes, so table and verdict agree. This is the display
    variant of the compatible Holm bounds of Strassburger & Bretz (2008), "Compatible simultaneous
    lower confidence bounds for the Holm procedure and other Bonferroni-based closed tests",
    Stat. Med. 27(24), 4914-4927, which for passed gates would report just the margin; it keeps the
    data's own bound instead. A gate that Holm does not pass is never PASS: if its own bound would
    clear at the stopping level (possible only up to resampling granularity) it is INCONCLUSIVE.

    Note: a candidate is promoted only if *every* gate passes. That is an intersection-union test
    (Berger 1982, Technometrics 24(4), 295-300): without any correction, a candidate that is bad on
    at least one gate is promoted with probability <= alpha. Holm controls a different error, the
    chance that *any* gate's row claims non-inferiority falsely, which is what a gate table read row
    by row asserts; it costs power on the all-must-pass decision.
    """
    k = len(comparisons)
    if k == 0:
        return []
    for c in comparisons:
        if abs((1 - c.confidence) - alpha) > 1e-12:
            raise ValueError(
                f"every comparison must be judged at 1 - alpha = {1 - alpha:g} before adjusting; "
                f"got confidence {c.confidence:g}"
            )
    result = holm([c.p_value for c in comparisons], alpha)
    order = sorted(range(k), key=lambda i: comparisons[i].p_value)
    rank = {gate: step for step, gate in enumerate(order, start=1)}
    passed = sum(result.reject)
    stop_level = alpha / (k - passed) if passed < k else alpha
    out = []
    for i, c in enumerate(comparisons):
        level = alpha / (k - rank[i] + 1) if result.reject[i] else stop_level
        adj = c.at(1 - level) if c.units >= 2 else c
        if result.reject[i] and adj.verdict != "pass":
            adj = replace(adj, verdict="pass", reason="passed Holm's step-down at the adjusted level")
        elif not result.reject[i] and adj.verdict == "pass":
            adj = replace(adj, verdict="inconclusive", reason="not passed by Holm's step-down for the family")
        out.append(HolmAdjusted(c, adj, level, result.adjusted[i], result.reject[i]))
    return out


# ------------------------------------------------------------------------------- sequential


class ConfidenceSequence:
    """Always-valid confidence sequence for the mean of differences in [-1, 1], by betting.

    Waudby-Smith & Ramdas (2023), "Estimating means of bounded random variables by betting",
    JRSS-B 86(1), 1-27: section 4 (hedged capital process, Theorem 3) with the predictable plug-in
    bets of eq. (26) and the truncation of section 4.2. Differences d are mapped to y = (d + 1) / 2 in
    [0, 1]. For every candidate mean m on a grid, two capital processes bet that the mean is above
    and below m:

        K+_t(m) = prod_i (1 + lambda_i^+(m) (y_i - m)),   K-_t(m) = prod_i (1 - lambda_i^-(m) (y_i - m)),

    with lambda_i^+(m) = min(lambda_i, c/m), lambda_i^-(m) = min(lambda_i, c/(1-m)), c = 1/2, and
    lambda_i depending on y_1..y_{i-1} only. Each is a nonnegative martingale at the true mean, so by
    Ville's inequality it ever reaches 1/alpha with probability <= alpha: the lower bound (grid
    points with K+ >= 1/alpha are excluded) holds at *every* time with probability >= 1 - alpha,
    and so does the upper bound (jointly >= 1 - 2 alpha). Looking after every chunk therefore costs
    nothing. The reported bounds are rounded outwards to the grid and intersected over time.

    Bets: lambda_i = sqrt(2 log(1/alpha) / (sigma2_{i-1} * s_i)) with the running variance estimate
    sigma2 of the paper, and s_i = i log(1 + i) (the time-uniform choice of eq. 26), or s_i =
    ``horizon`` when the planned number of items is known: that tunes the sequence to be tightest
    around the horizon (the paper's fixed-n choice), still valid at every time.
    """

    def __init__(self, *, alpha: float = 0.05, horizon: int | None = None, grid: int = 1000, c: float = 0.5):
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        if horizon is not None and horizon < 1:
            raise ValueError(f"horizon must be a positive number of items, got {horizon!r}")
        if grid < 10:
            raise ValueError(f"grid must have at least 10 points, got {grid!r}")
        if not 0 < c <= 1:
            raise ValueError(f"c must be in (0, 1], got {c!r}")
        self.alpha = alpha
        self.horizon = horizon
        self._c = c
        self._m = (np.arange(grid) + 0.5) / grid  # candidate means of y, inside (0, 1)
        self._step = 1.0 / grid
        self._log_up = np.zeros(grid)  # log K+ (bets that the mean is above m)
        self._log_down = np.zeros(grid)
        self._n = 0
        self._sum = 0.0
        self._sq = 0.0  # sum of (y_i - mu_hat_i)^2
        self._lower_y = 0.0
        self._upper_y = 1.0

    @property
    def n(self) -> int:
        """Items seen."""
        return self._n

    @property
    def lower(self) -> float:
        """Lower bound of the mean difference, valid at every time (>= -1)."""
        return 2 * self._lower_y - 1

    @property
    def upper(self) -> float:
        """Upper bound of the mean difference, valid at every time (<= 1)."""
        return 2 * self._upper_y - 1

    @property
    def mean(self) -> float:
        """Mean of the differences seen (0 before any)."""
        return 2 * self._sum / self._n - 1 if self._n else 0.0

    def update(self, chunk: Sequence[float] | np.ndarray) -> ConfidenceSequence:
        """Add a chunk of differences (each in [-1, 1]) and tighten the bounds; returns self."""
        d = np.asarray(chunk, dtype=float).reshape(-1)
        if d.size == 0:
            return self
        if not np.all(np.isfinite(d)) or np.any(np.abs(d) > 1):
            raise ValueError("differences must lie in [-1, 1] (per-item scores in [0, 1])")
        y = (d + 1) / 2
        i = self._n + np.arange(1, y.size + 1)  # 1-based time of each item
        # Running estimates after each item (paper: mu_hat_t = (1/2 + sum y) / (t + 1), sigma2 the same
        # way with 1/4 as the prior); the bet on item i uses those after item i - 1 only.
        mu_after = (0.5 + self._sum + np.cumsum(y)) / (i + 1)
        sq_after = self._sq + np.cumsum((y - mu_after) ** 2)
        sigma2_after = (0.25 + sq_after) / (i + 1)
        sigma2_before = np.concatenate(([(0.25 + self._sq) / (self._n + 1)], sigma2_after[:-1]))
        scale = float(self.horizon) if self.horizon is not None else i * np.log1p(i)
        lam = np.sqrt(2 * math.log(1 / self.alpha) / (sigma2_before * scale))
        m = self._m[:, None]
        lam_up = np.minimum(lam[None, :], self._c / m)
        lam_down = np.minimum(lam[None, :], self._c / (1 - m))
        self._log_up += np.log1p(lam_up * (y[None, :] - m)).sum(axis=1)
        self._log_down += np.log1p(-lam_down * (y[None, :] - m)).sum(axis=1)
        self._n += y.size
        self._sum += float(y.sum())
        self._sq = float(sq_after[-1])
        threshold = math.log(1 / self.alpha)
        kept = (self._log_up < threshold) & (self._log_down < threshold)
        if kept.any():
            first, last = np.flatnonzero(kept)[[0, -1]]
            # Outward to the excluded neighbours' centres' edge: conservative by at most one grid step.
            lower = max(0.0, float(self._m[first]) - self._step)
            upper = min(1.0, float(self._m[last]) + self._step)
        else:  # every grid point excluded (cannot happen at the true mean unless an alpha-event)
            centre = self._sum / self._n
            lower = upper = centre
        # Running intersection (still valid: every interval covers at every time on the same event).
        # An empty intersection means that event failed; keep the newest interval rather than none.
        if max(self._lower_y, lower) <= min(self._upper_y, upper):
            self._lower_y, self._upper_y = max(self._lower_y, lower), min(self._upper_y, upper)
        else:
            self._lower_y, self._upper_y = lower, upper
        return self


# ------------------------------------------------------------------------------- group-sequential


def _spent(t: float, alpha: float, spending: str) -> float:
    """Lan-DeMets alpha-spending functions (Lan & DeMets 1983, "Discrete sequential boundaries for
    clinical trials", Biometrika 70(3), 659-663): the error allowed by information fraction t.
    ``pocock``: alpha ln(1 + (e - 1) t) (Kim & DeMets 1987), spends early, stops earliest;
    ``obrien_fleming``: 2 - 2 Phi(z_{1-alpha/2} / sqrt t), spends late, keeps the fixed test's power."""
    if t <= 0:
        return 0.0
    t = min(t, 1.0)
    if spending == "pocock":
        return alpha * math.log(1 + (math.e - 1) * t)
    if spending == "obrien_fleming":
        z = float(_stats().norm.ppf(1 - alpha / 2))
        return float(2 - 2 * _stats().norm.cdf(z / math.sqrt(t)))
    raise ValueError(f"spending must be 'pocock' or 'obrien_fleming', got {spending!r}")


def spending_boundary(fractions: Sequence[float], alpha: float, spending: str = "pocock") -> list[float]:
    """One-sided z boundaries at the looks ``fractions`` (increasing information fractions in
    (0, 1]): crossing look k first has probability (spent(t_k) - spent(t_{k-1})) under H0."""
    test = GroupSequentialTest(alpha=alpha, horizon=1_000_000, spending=spending)
    return [test._next_boundary(float(t)) for t in fractions]


class GroupSequentialTest:
    """Non-inferiority by group-sequential looks with alpha spending, for a known horizon.

    At each look (a chunk of the stream) with n items of the planned ``horizon``, the statistic is
    Z = (mean(e) + margin) / se on the improvement e; it passes once Z >= b_k and fails once
    Z <= -b_k, where the boundaries b_k spend ``alpha`` over the information fraction t = n /
    horizon with a Lan-DeMets function (see ``_spent``). b_k solves P(no earlier crossing, Z_k >=
    b_k) = spent(t_k) - spent(t_{k-1}) under H0 for the looks actually taken (so looks need not be
    equally spaced, only not chosen from the data), by the exact recursion of Armitage, McPherson &
    Rowe (1969) on the B-value B(t) = Z sqrt(t), whose increments are independent normal, on a
    grid. The two stopping rules are non-binding for each other: the pass error stays <= alpha
    whatever the fail rule does, and vice versa.

    Unlike ``ConfidenceSequence`` it is valid for a planned horizon and looks not chosen from the
    data, not at every time; in exchange it stops sooner: at the fixed test's 80%-power alternative,
    Pocock spending stops at a median 70% of the items (bench/gate_statistics.py).

    The boundary is used on the t scale with n - 1 degrees of freedom (the variance is estimated).
    The variance is estimated with a prior of one pseudo-item at the largest variance a difference
    of [0, 1] scores can have (1): ``(1 + sum (d - mean)^2) / (n + 1)``. Without it, a first chunk
    of ties has se 0 and an infinite Z; with it, 72 ties give se ~0.014 (a 5-point margin can pass,
    a 2-point one cannot, as the exact binomial bound of the fixed test says).
    """

    def __init__(
        self, *, alpha: float = 0.05, horizon: int, spending: str = "pocock", grid: int = 2001
    ) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        if horizon < 1:
            raise ValueError(f"horizon must be a positive number of items, got {horizon!r}")
        _spent(0.5, alpha, spending)  # validates the name
        self.alpha = alpha
        self.horizon = horizon
        self.spending = spending
        self._grid = np.linspace(-10.0, 10.0, grid)
        self._dx = float(self._grid[1] - self._grid[0])
        self._density: np.ndarray | None = None  # of B at the last look, on the continuation region
        self._t = 0.0
        self._n = 0
        self._sum = 0.0
        self._m2 = 0.0  # sum of squared deviations (Welford)
        self.boundary = math.inf
        """The z boundary of the latest look (inf before the first, or once alpha is spent)."""

    @property
    def n(self) -> int:
        return self._n

    @property
    def mean(self) -> float:
        return self._sum / self._n if self._n else 0.0

    @property
    def se(self) -> float:
        return math.sqrt((1.0 + self._m2) / (self._n + 1) / self._n) if self._n else math.inf

    @property
    def lower(self) -> float:
        """Repeated lower confidence bound of the mean difference at this look (>= -1)."""
        if not self._n or not math.isfinite(self.boundary):
            return -1.0
        return max(-1.0, self.mean - self.boundary * self.se)

    @property
    def upper(self) -> float:
        if not self._n or not math.isfinite(self.boundary):
            return 1.0
        return min(1.0, self.mean + self.boundary * self.se)

    def _next_boundary(self, t: float) -> float:
        """Advance the recursion to information fraction ``t`` and return its z boundary."""
        t = min(t, 1.0)
        step = _spent(t, self.alpha, self.spending) - _spent(self._t, self.alpha, self.spending)
        if t <= self._t or step <= 0:
            return math.inf
        norm = _stats().norm
        dt = t - self._t
        if self._density is None:
            density = norm.pdf(self._grid, scale=math.sqrt(dt))
        else:
            half = self._grid.size // 2
            kernel = norm.pdf(self._grid - self._grid[half], scale=math.sqrt(dt))
            density = np.convolve(self._density * self._dx, kernel, mode="same")
        tail = np.cumsum((density * self._dx)[::-1])[::-1]  # P(B >= grid point, still running)
        index = int(np.searchsorted(-tail, -step))  # first point whose tail mass is <= step
        index = min(index, self._grid.size - 1)
        c = float(self._grid[index])
        self._density = np.where(self._grid < c, density, 0.0)
        self._t = t
        return c / math.sqrt(t)

    def update(self, chunk: Sequence[float] | np.ndarray) -> GroupSequentialTest:
        """Add a chunk of differences (each in [-1, 1]) and take a look; returns self."""
        d = np.asarray(chunk, dtype=float).reshape(-1)
        if d.size == 0:
            return self
        if not np.all(np.isfinite(d)) or np.any(np.abs(d) > 1):
            raise ValueError("differences must lie in [-1, 1] (per-item scores in [0, 1])")
        # Chan et al.'s pairwise update of (n, mean, sum of squared deviations): stable, no loop.
        n_a, mean_a, n_b, mean_b = self._n, self.mean, d.size, float(d.mean())
        n = n_a + n_b
        self._m2 += float(((d - mean_b) ** 2).sum()) + (mean_b - mean_a) ** 2 * n_a * n_b / n
        self._sum += float(d.sum())
        self._n = n
        z = self._next_boundary(self._n / self.horizon)
        # The z boundaries assume a known variance; with it estimated from n items, Z is closer to a
        # t with n - 1 df, whose heavier tails would cross early boundaries ~2x as often. Use the t
        # quantile of the same tail probability (the usual correction; Jennison & Turnbull 2000, 3.8).
        if math.isfinite(z) and n > 1:
            z = float(_stats().t.ppf(_stats().norm.cdf(z), n - 1))
        self.boundary = z
        return self


def sequential_decision(
    cs: ConfidenceSequence | GroupSequentialTest, margin: float, direction: Direction = "higher"
) -> str:
    """The verdict of a non-inferiority gate monitored with ``cs``: "pass", "fail" or "undecided".

    Higher is better: pass once the lower bound is >= -margin, fail once the upper bound is below
    -margin. Lower is better: the mirror (pass once the upper bound is <= margin, fail once the lower
    bound exceeds it). Because the bounds are valid at every time, stopping at the first decided
    look keeps the false-pass rate <= ``cs.alpha``.
    """
    _check_direction(direction)
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    if cs.n == 0:
        return "undecided"
    if direction == "higher":
        if cs.lower >= -margin:
            return "pass"
        if cs.upper < -margin:
            return "fail"
    else:
        if cs.upper <= margin:
            return "pass"
        if cs.lower > margin:
            return "fail"
    return "undecided"
