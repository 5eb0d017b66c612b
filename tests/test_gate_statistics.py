"""Gate statistics (llmrelease.tasks.gates.statistics): known answers, operating characteristics, edges.

The Monte Carlo tests are seeded, so they are deterministic; their tolerances are there so that a
change of implementation detail (resampling order, grid) does not break them, while removing the
cluster or the multiplicity correction does. Sizes are kept small (the whole file runs in seconds);
bench/gate_statistics.py is the heavy version with thousands of runs.
"""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest
from scipy import stats

from bench.gate_statistics import draw
from llmrelease.tasks.gates.statistics import (
    ConfidenceSequence,
    binary_paired_test,
    holm,
    holm_adjust,
    mean_bound,
    paired_comparison,
    proportion_bound,
    sequential_decision,
)

MARGIN = 0.05


# ------------------------------------------------------------------------------- known answers


def test_wilson_bound_matches_the_formula():
    k, n, z = 18, 72, stats.norm.ppf(0.975)
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)
    assert proportion_bound(k, n, confidence=0.975, side="lower") == pytest.approx(lo, abs=1e-12)
    assert proportion_bound(k, n, confidence=0.975, side="upper") == pytest.approx(hi, abs=1e-12)
    assert lo == pytest.approx(0.1644, abs=1e-4)  # 0.25 on 72 items: the demo's third-release accuracy


def test_exact_bound_is_clopper_pearson():
    assert proportion_bound(18, 72, confidence=0.95, method="exact") == pytest.approx(
        stats.beta.ppf(0.05, 18, 55), abs=1e-10
    )
    assert proportion_bound(0, 16, confidence=0.95, side="lower", method="exact") == 0.0
    assert proportion_bound(0, 16, confidence=0.95, side="upper", method="exact") == pytest.approx(
        1 - 0.05 ** (1 / 16), abs=1e-10
    )
    assert proportion_bound(16, 16, side="upper") == 1.0


def test_holm_matches_the_textbook_example():
    # p = (0.01, 0.04, 0.03, 0.005): sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> 0.06
    result = holm([0.01, 0.04, 0.03, 0.005], 0.05)
    assert result.adjusted == pytest.approx((0.03, 0.06, 0.06, 0.02))
    assert result.reject == (True, False, False, True)


def test_holm_agrees_with_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(1)
    for k in (1, 2, 5, 10):  # statsmodels' Holm costs a gc.collect() per call: few cases
        for _ in range(3):
            p = rng.uniform(0, 0.2, size=k) ** rng.uniform(0.5, 2)
            reject, adjusted, _, _ = multipletests(p, alpha=0.05, method="holm")
            ours = holm(p, 0.05)
            assert ours.adjusted == pytest.approx(tuple(adjusted), abs=1e-12)
            assert ours.reject == tuple(bool(r) for r in reject)


def test_mcnemar_exact_is_the_binomial_on_discordant_pairs():
    cand = np.array([1] * 3 + [0] * 10 + [1] * 20 + [0] * 7)
    champ = np.array([0] * 3 + [1] * 10 + [1] * 20 + [0] * 7)
    t = binary_paired_test(cand, champ, margin=0)
    assert (t.wins, t.losses, t.ties, t.n) == (3, 10, 27, 40)
    assert t.p_value_two_sided == pytest.approx(2 * 378 / 8192, abs=1e-12)  # 2 P(Bin(13, 1/2) <= 3)
    assert t.p_value == pytest.approx(1 - 92 / 8192, abs=1e-12)  # P(W >= 3): no sign of improvement


def test_tango_score_reduces_to_mcnemar_and_uses_the_restricted_mle():
    from scipy.optimize import minimize_scalar

    from llmrelease.tasks.gates.statistics import _tango_restricted_loss

    cand = np.array([1] * 12 + [0] * 5 + [1] * 30 + [0] * 13)
    champ = np.array([0] * 12 + [1] * 5 + [1] * 30 + [0] * 13)
    near_zero = binary_paired_test(cand, champ, margin=1e-9)
    assert near_zero.statistic == pytest.approx((12 - 5) / math.sqrt(17), rel=1e-6)
    w, lose, n, t = 12, 5, 60, -0.1

    def nll(x):
        return -(w * math.log(x + t) + lose * math.log(x) + (n - w - lose) * math.log(1 - 2 * x - t))

    brute = minimize_scalar(
        nll, bounds=(-t + 1e-9, (1 - t) / 2 - 1e-9), method="bounded", options={"xatol": 1e-12}
    )
    assert _tango_restricted_loss(w, lose, n, t) == pytest.approx(brute.x, abs=1e-6)
    test = binary_paired_test(cand, champ, margin=0.1)
    x = brute.x
    assert test.statistic == pytest.approx(
        (w - lose + n * 0.1) / math.sqrt(n * (2 * x + t - t * t)), rel=1e-5
    )
    assert test.p_value < near_zero.p_value  # a margin makes non-inferiority easier to show


def test_binary_test_mirrors_for_lower_is_better():
    cand, champ = np.array([1, 1, 0, 0, 1]), np.array([0, 1, 1, 1, 0])
    lower = binary_paired_test(cand, champ, margin=0.05, direction="lower")
    higher = binary_paired_test(champ, cand, margin=0.05)
    assert (lower.wins, lower.losses, lower.p_value) == (higher.wins, higher.losses, higher.p_value)


def test_mde_agrees_with_statsmodels_power():
    from statsmodels.stats.power import TTestPower

    rng = np.random.default_rng(3)
    d = draw(rng, 200, 0.0)
    c = paired_comparison(d, margin=MARGIN)
    es = TTestPower().solve_power(nobs=200, alpha=0.05, power=0.8, alternative="larger")
    assert c.mde == pytest.approx(es * c.sd, rel=0.01)  # Bloom's t multiplier vs the noncentral t


def test_bound_is_close_to_the_t_bound_and_the_p_value_inverts_it():
    rng = np.random.default_rng(4)
    for i in range(40):
        d = draw(rng, 150, rng.uniform(-0.12, 0.05))
        c = paired_comparison(d, margin=MARGIN, seed=i)
        t_bound = c.delta - stats.t.ppf(0.95, 149) * c.se_naive
        assert c.bound == pytest.approx(t_bound, abs=0.25 * c.se_naive)
        assert c.ci_low == c.bound and c.ci_level == pytest.approx(0.90)
        if abs(c.bound + MARGIN) > 2 / 150:  # away from ties at the boundary's resolution
            assert (c.p_value <= 0.05) == (c.verdict == "pass")


def test_lower_is_better_is_the_mirror():
    d = draw(np.random.default_rng(5), 120, -0.02)
    up = paired_comparison(d, margin=MARGIN, seed=1)
    down = paired_comparison(-d, margin=MARGIN, direction="lower", seed=1)
    assert down.bound == pytest.approx(-up.bound)
    assert (down.ci_low, down.ci_high) == pytest.approx((-up.ci_high, -up.ci_low))
    assert (down.p_value, down.verdict, down.mde) == (up.p_value, up.verdict, up.mde)


def test_singleton_clusters_change_nothing_but_the_resampler():
    d = draw(np.random.default_rng(6), 300, 0.0)
    naive = paired_comparison(d, margin=MARGIN)
    single = paired_comparison(d, margin=MARGIN, clusters=np.arange(300))
    assert single.design_effect == pytest.approx(1.0) and single.se_cluster == pytest.approx(naive.se_naive)
    assert single.bound == pytest.approx(naive.bound, abs=0.2 * naive.se_naive)


def test_design_effect_follows_the_intra_cluster_correlation():
    rng = np.random.default_rng(7)
    clusters = np.repeat(np.arange(200), 5)
    deffs = [
        paired_comparison(
            draw(rng, 1000, 0.0, clusters=clusters, icc=0.5), margin=MARGIN, clusters=clusters
        )
        for _ in range(5)
    ]
    # Kish: deff = 1 + (m - 1) icc = 3 for clusters of 5 at icc 0.5.
    assert np.mean([c.design_effect for c in deffs]) == pytest.approx(3.0, rel=0.15)
    assert all(c.effective_n == pytest.approx(c.n / c.design_effect) for c in deffs)


def test_items_needed_is_the_smallest_size_whose_mde_meets_the_margin():
    c = paired_comparison(draw(np.random.default_rng(8), 72, 0.0), margin=MARGIN)
    assert c.verdict in ("inconclusive", "pass") and c.mde > MARGIN
    from llmrelease.tasks.gates.statistics import _multiplier

    def mde(n):
        return _multiplier(0.95, 0.8, n - 1) * c.sd / math.sqrt(n)

    assert mde(c.items_needed) <= MARGIN < mde(c.items_needed - 1)


def test_verdicts_follow_the_documented_rule():
    rng = np.random.default_rng(9)
    small_bad = paired_comparison(draw(rng, 40, -0.6, discordance=0.8), margin=MARGIN)
    assert small_bad.verdict == "fail" and small_bad.mde > MARGIN and small_bad.ci_high < -MARGIN
    big_equal_ish = paired_comparison(draw(rng, 3000, -0.055), margin=MARGIN)
    assert big_equal_ish.mde <= MARGIN and big_equal_ish.verdict == "fail"
    small_unclear = paired_comparison(draw(rng, 50, -0.03), margin=MARGIN, seed=2)
    assert small_unclear.verdict == "inconclusive" and small_unclear.items_needed > 50
    clear_win = paired_comparison(draw(rng, 60, 0.3), margin=MARGIN)
    assert clear_win.verdict == "pass" and clear_win.mde > MARGIN  # underpowered, yet shown: PASS


# ------------------------------------------------------------------------------- operating characteristics


def test_false_pass_at_the_margin_stays_near_nominal():
    # 400 evalsets of 200 independent items whose true delta is exactly -margin. Nominal 5%; the
    # binomial standard error of 400 runs is 1.1 points, so 0.085 is ~3 SE of slack.
    rng = np.random.default_rng(2024)
    passes = [
        paired_comparison(draw(rng, 200, -MARGIN), margin=MARGIN, seed=i).verdict == "pass"
        for i in range(400)
    ]
    assert 0.01 <= np.mean(passes) <= 0.085


def test_cluster_bootstrap_holds_the_level_where_the_naive_one_does_not():
    # 50 clusters of 10, intra-cluster correlation 0.7 (design effect ~7.3). Measured with these seeds
    # (bench/ has the 4,000-run version): cluster-corrected ~5%, naive ~30%. The gap assertion fails if
    # the clusters are ignored (both would be ~30%).
    rng = np.random.default_rng(77)
    clusters = np.repeat(np.arange(50), 10)
    cluster_pass, naive_pass = [], []
    for i in range(300):
        d = draw(rng, 500, -MARGIN, clusters=clusters, icc=0.7)
        cluster_pass.append(paired_comparison(d, margin=MARGIN, clusters=clusters, seed=i).verdict == "pass")
        naive_pass.append(paired_comparison(d, margin=MARGIN, seed=i, resamples=500).verdict == "pass")
    assert np.mean(cluster_pass) <= 0.09
    assert np.mean(naive_pass) >= np.mean(cluster_pass) + 0.12


def test_holm_keeps_family_wise_false_passes_at_alpha():
    # 10 comparison gates, every one exactly at its margin (all ten null hypotheses true). A false pass
    # claim is any gate reading PASS. Uncorrected: 1 - 0.95^10 = 40%; Holm: <= 5%. 200 families;
    # SE of 5% over 200 is 1.5 points. Fails if the correction is removed (the raw rate is ~40%).
    rng = np.random.default_rng(10)
    raw_any, holm_any, raw_all = [], [], []
    for f in range(200):
        family = [
            paired_comparison(draw(rng, 100, -MARGIN), margin=MARGIN, seed=10 * f + g, resamples=1000)
            for g in range(10)
        ]
        adjusted = holm_adjust(family, 0.05)
        raw_any.append(any(c.verdict == "pass" for c in family))
        raw_all.append(all(c.verdict == "pass" for c in family))
        holm_any.append(any(a.adjusted.verdict == "pass" for a in adjusted))
        assert [a.passed for a in adjusted] == [a.adjusted.verdict == "pass" for a in adjusted]
    assert np.mean(holm_any) <= 0.09
    assert np.mean(raw_any) >= 0.25
    # Promotion needs every gate: already <= alpha without correction (intersection-union test).
    assert np.mean(raw_all) <= 0.05


def test_confidence_sequence_error_holds_across_repeated_looks():
    # 300 streams of 600 items at the margin, a look after every 20 items (30 looks). The false pass
    # at any look, and the true mean leaving the sequence at any look, must stay <= alpha = 5% (a
    # fixed-n bound checked at 30 looks would exceed it several times over). Betting sequences are
    # conservative in practice (~1% measured), so 0.07 leaves room without hiding a broken one.
    rng = np.random.default_rng(11)
    false_pass = miss = 0
    for _ in range(300):
        cs = ConfidenceSequence(alpha=0.05)
        passed = missed = False
        for _look in range(30):
            cs.update(draw(rng, 20, -MARGIN))
            passed |= sequential_decision(cs, MARGIN) == "pass"
            missed |= not cs.lower <= -MARGIN <= cs.upper
        false_pass += passed
        miss += missed
    assert false_pass / 300 <= 0.07
    assert miss / 300 <= 0.07


def test_confidence_sequence_decides_a_clear_case_early():
    rng = np.random.default_rng(12)
    cs = ConfidenceSequence(alpha=0.05, horizon=1000)
    while sequential_decision(cs, MARGIN) == "undecided" and cs.n < 1000:
        cs.update(draw(rng, 25, 0.15))
    assert sequential_decision(cs, MARGIN) == "pass" and cs.n < 500
    bad = ConfidenceSequence(alpha=0.05).update(draw(rng, 400, -0.4, discordance=0.6))
    assert sequential_decision(bad, MARGIN) == "fail"
    assert (
        sequential_decision(
            ConfidenceSequence().update(-draw(rng, 400, -0.4, discordance=0.6)), MARGIN, "lower"
        )
        == "fail"
    )


# ------------------------------------------------------------------------------- degenerate inputs


def _no_nan(c):
    for f in fields(c):
        v = getattr(c, f.name)
        if isinstance(v, float):
            assert not math.isnan(v), f.name


def test_one_item_is_inconclusive_without_nan():
    c = paired_comparison([1.0], margin=MARGIN)
    _no_nan(c)
    assert c.verdict == "inconclusive" and c.mde == math.inf and c.items_needed is None and c.p_value == 1.0
    one_cluster = paired_comparison([0.0, 1.0, 0.0], margin=MARGIN, clusters=["a", "a", "a"])
    assert one_cluster.verdict == "inconclusive" and one_cluster.clusters == 1


@pytest.mark.parametrize(
    ("n", "value", "verdict"),
    [
        (72, 0.0, "pass"),
        (72, 0.5, "pass"),
        (72, -0.5, "fail"),
        (10, 0.0, "inconclusive"),
        (72, -0.02, "fail"),
    ],
)
def test_equal_differences_get_the_exact_binomial_bound_not_the_point(n, value, verdict):
    # 0 of n items differ from the common value: Clopper-Pearson bounds the share that could, r,
    # and an item that differs can sit anywhere in [-1, 1].
    c = paired_comparison([value] * n, margin=MARGIN)
    _no_nan(c)
    r = 1 - 0.05 ** (1 / n)
    assert c.mde == pytest.approx(r) and c.sd == 0.0
    assert c.bound == pytest.approx(value - (1 + value) * r)
    assert c.ci_high == pytest.approx(value + (1 - value) * r)
    assert c.verdict == verdict
    assert (c.p_value <= 0.05) == (verdict == "pass")


def test_seventy_two_ties_cannot_show_a_two_point_margin():
    """A guard rate that is 0 for champion and candidate on 72 items: a rise of 2 points could hide in
    the items not drawn (rule of three: ~4%), so the gate is INCONCLUSIVE and asks for ~149 items."""
    c = paired_comparison([0.0] * 72, margin=0.02, direction="lower")
    assert c.verdict == "inconclusive" and c.items_needed == 149
    assert paired_comparison([0.0] * 149, margin=0.02, direction="lower").verdict == "pass"
    assert paired_comparison([0.0] * 72, margin=0.05, direction="lower").verdict == "pass"


def test_equal_cluster_means_are_bounded_by_the_number_of_clusters():
    c = paired_comparison([1.0, -1.0, 0.0, 0.0], margin=MARGIN, clusters=[1, 1, 2, 2])
    _no_nan(c)
    assert c.verdict == "inconclusive" and c.design_effect == 0.0 and c.mde == pytest.approx(1 - 0.05**0.5)


def test_no_nan_on_ordinary_inputs():
    _no_nan(paired_comparison(draw(np.random.default_rng(13), 30, 0.0), margin=0.0))


def test_margin_zero_never_asks_for_a_finite_evalset():
    c = paired_comparison(draw(np.random.default_rng(14), 80, 0.0), margin=0.0)
    assert c.items_needed is None and c.verdict in ("inconclusive", "pass")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"diffs": []}, "no paired items"),
        ({"diffs": [0.1, float("nan")]}, "finite"),
        ({"diffs": [0.1, 0.2], "direction": "up"}, "direction"),
        ({"diffs": [0.1, 0.2], "margin": -0.1}, "margin"),
        ({"diffs": [0.1, 0.2], "confidence": 1.0}, "confidence"),
        ({"diffs": [0.1, 0.2], "clusters": [1]}, "one label per item"),
        ({"diffs": [0.1, 0.2], "resamples": 10}, "resamples"),
    ],
)
def test_paired_comparison_refuses_bad_input(kwargs, match):
    args = {"margin": MARGIN} | kwargs
    with pytest.raises(ValueError, match=match):
        paired_comparison(args.pop("diffs"), **args)


def test_other_functions_refuse_bad_input():
    with pytest.raises(ValueError, match="0/1"):
        binary_paired_test([0.5, 1], [1, 0], margin=0)
    with pytest.raises(ValueError, match="pair item by item"):
        binary_paired_test([1, 0], [1], margin=0)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        proportion_bound(5, 4)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        ConfidenceSequence().update([1.5])
    with pytest.raises(ValueError, match="p-values"):
        holm([0.1, 1.2])
    with pytest.raises(ValueError, match="1 - alpha"):
        holm_adjust([paired_comparison([0.1, 0.2, 0.0], margin=MARGIN, confidence=0.9)], 0.05)


def test_small_edges_of_the_helpers():
    assert binary_paired_test([1, 0], [1, 0], margin=0).p_value == 1.0  # no discordant pair
    # No variation: the share of items that could differ is bounded exactly, never the point.
    assert mean_bound([0.4] * 3) == pytest.approx(0.4 * 0.05 ** (1 / 3))
    assert mean_bound([1.0] * 59, side="lower") == pytest.approx(0.05 ** (1 / 59))
    assert mean_bound([0.7]) == pytest.approx(0.7 * 0.05)
    v = np.random.default_rng(15).uniform(size=200)
    assert mean_bound(v, side="lower") < v.mean() < mean_bound(v, side="upper")
    assert holm([]).adjusted == ()
    assert holm_adjust([]) == []
    cs = ConfidenceSequence().update([])
    assert (
        cs.n == 0 and (cs.lower, cs.upper) == (-1.0, 1.0) and sequential_decision(cs, MARGIN) == "undecided"
    )


def test_alpha_spending_boundaries_match_their_closed_forms() -> None:
    from llmrelease.tasks.gates.statistics import spending_boundary

    # One look at the horizon: the fixed one-sided test (within the recursion's grid step).
    assert spending_boundary([1.0], 0.05)[0] == pytest.approx(1.645, abs=0.02)
    # The first of two looks spends alpha ln(1 + (e - 1) / 2) = 0.0310 alone: z = 1.866.
    first, second = spending_boundary([0.5, 1.0], 0.05, "pocock")
    assert first == pytest.approx(1.866, abs=0.02) and 1.645 < second < first + 0.2
    # O'Brien-Fleming spends almost nothing early.
    assert spending_boundary([0.1, 1.0], 0.05, "obrien_fleming")[0] > 4


def test_a_group_sequential_look_uses_a_t_boundary_and_a_floored_variance() -> None:
    from llmrelease.tasks.gates.statistics import GroupSequentialTest

    ties = GroupSequentialTest(horizon=72).update(np.zeros(8))
    assert ties.se > 0 and sequential_decision(ties, 0.05) == "undecided"  # 8 ties prove nothing
    assert ties.boundary > spending_boundary_z(8 / 72)
    clear = GroupSequentialTest(horizon=72).update(np.full(40, -1.0))
    assert sequential_decision(clear, 0.05) == "fail" and clear.upper < -0.05
    with pytest.raises(ValueError, match="spending"):
        GroupSequentialTest(horizon=10, spending="linear")


def spending_boundary_z(t: float) -> float:
    from llmrelease.tasks.gates.statistics import spending_boundary

    return spending_boundary([t], 0.05 / 1)[0]
