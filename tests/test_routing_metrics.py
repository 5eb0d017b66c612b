"""The router metrics (APGR, CPT, the random router at equal cost), checked on cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from llmrelease.tasks.routing.cascade import RouteItems, apgr, cpt, escalated, operating_point, sweep
from llmrelease.tasks.routing.evidence import resample_weights, router_evidence


def items(confidence, cheap_q=(0, 0, 1, 1), strong_q=(1, 1, 1, 0), cheap_c=1.0, strong_c=3.0, clusters=None):
    n = len(confidence)
    return RouteItems(
        ids=[f"i{k}" for k in range(n)],
        cheap_quality=np.array(cheap_q, dtype=float),
        strong_quality=np.array(strong_q, dtype=float),
        cheap_cost=np.full(n, cheap_c),
        strong_cost=np.full(n, strong_c),
        confidence=np.array(confidence, dtype=float),
        clusters=None if clusters is None else np.array(clusters),
    )


# Four items: cheap right on 2 and 3, strong right on 0, 1 and 2. Q_cheap 0.5, Q_strong 0.75: gap 0.25.
# Escalating the least confident first: k=1 gains item 0 (PGR 1), k=2 item 1 (PGR 2), k=3 nothing
# (item 2 is right either way), k=4 loses item 3 (PGR 1).
HAND = items([0.1, 0.2, 0.3, 0.4])


def test_sweep_points_are_the_hand_computed_ones():
    curve = sweep(HAND)
    assert curve.strong_share[0].tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert curve.quality[0].tolist() == [0.5, 0.75, 1.0, 1.0, 0.75]
    assert curve.pgr[0].tolist() == [0, 1, 2, 2, 1]
    assert curve.cost[0].tolist() == [1, 1.75, 2.5, 3.25, 4]  # an escalation pays for both calls
    assert curve.thresholds.tolist() == [0.1, 0.2, 0.3, 0.4, np.inf]


def test_apgr_is_the_area_under_pgr_against_strong_share():
    # trapezoids of width 0.25: (0+1)/2 + (1+2)/2 + (2+2)/2 + (2+1)/2 = 5.5
    assert apgr(sweep(HAND))[0] == pytest.approx(5.5 * 0.25)


def test_cpt_is_the_first_crossing_on_the_randomised_threshold_line():
    curve = sweep(HAND)
    assert cpt(curve, 0.5)[0] == pytest.approx(0.125)  # halfway from (0, 0) to (0.25, 1)
    assert cpt(curve, 0.8)[0] == pytest.approx(0.2)
    assert cpt(curve, 1.0)[0] == pytest.approx(0.25)


def test_tied_confidences_are_one_point():
    # items 1 and 2 tie: no threshold escalates one without the other
    curve = sweep(items([0.1, 0.3, 0.3, 0.4]))
    assert curve.strong_share[0].tolist() == [0, 0.25, 0.75, 1]
    assert curve.pgr[0].tolist() == [0, 1, 2, 1]
    assert curve.thresholds.tolist() == [0.1, 0.3, 0.4, np.inf]
    assert apgr(curve)[0] == pytest.approx(0.25 * 0.5 + 0.5 * 1.5 + 0.25 * 1.5)


def test_a_router_that_gains_in_proportion_to_its_share_has_apgr_one_half():
    # the strong route is right everywhere the cheap one is wrong, one item at a time: PGR = share
    r = items([0.1, 0.2, 0.3, 0.4], cheap_q=(0, 0, 0, 0), strong_q=(1, 1, 1, 1))
    assert apgr(sweep(r))[0] == pytest.approx(0.5)
    assert cpt(sweep(r), 0.5)[0] == pytest.approx(0.5)


def test_operating_point_and_random_router_at_equal_cost():
    op = operating_point(HAND, escalated(HAND, 0.25))  # escalates items 0 and 1
    assert op.quality[0] == 1.0
    assert op.strong_share[0] == 0.5
    assert op.cost[0] == pytest.approx(2.5)  # 1 for every cheap call + 3 for each of half the items
    # a direct random router costs 1 + 2 s: equal cost at s = 0.75, quality 0.25 * 0.5 + 0.75 * 0.75
    assert op.random_share[0] == pytest.approx(0.75)
    assert op.random_quality[0] == pytest.approx(0.6875)
    assert op.pgr[0] == pytest.approx(2.0)


def test_a_cascade_dearer_than_the_strong_route_is_matched_by_the_strong_route():
    op = operating_point(HAND, np.ones(4, dtype=bool))  # everything escalated: costs 4 > 3
    assert op.random_share[0] == 1.0
    assert op.random_quality[0] == pytest.approx(0.75)


def test_without_a_gap_pgr_apgr_and_cpt_are_undefined():
    r = items([0.1, 0.2, 0.3, 0.4], cheap_q=(1, 0, 1, 0), strong_q=(0, 1, 0, 1))
    curve = sweep(r)
    assert np.isnan(apgr(curve)[0]) and np.isnan(cpt(curve, 0.5)[0])
    ev = router_evidence(r, 0.25, resamples=200)
    assert ev.value("router.apgr") is None and ev.value("router.pgr") is None
    assert ev.value("router.quality") == 0.5


def test_forced_escalation_is_escalated_at_any_threshold():
    r = items([-np.inf, 0.2, 0.3, 0.4])
    assert escalated(r, 0.0).tolist() == [True, False, False, False]
    assert escalated(r, -1e9).tolist() == [True, False, False, False]


def test_evidence_names_routes_and_brackets_every_value():
    ev = router_evidence(HAND, 0.25, cheap="zero-shot", strong="few-shot", resamples=500, seed=3)
    assert ev.value("routes.zero-shot.quality") == 0.5
    assert ev.value("routes.few-shot.cost_per_1k_requests") == pytest.approx(3000)
    assert ev.value("router.cost_per_1k_requests") == pytest.approx(2500)
    assert ev.value("router.vs_random") == pytest.approx(1.0 - 0.6875)
    assert ev.value("router.cost_ratio") == pytest.approx(2.5 / 3)
    for name, est in ev.estimates.items():
        if est.value is not None and est.low is not None:
            assert est.low <= est.value + 1e-9 and est.value <= est.high + 1e-9, name
    again = router_evidence(HAND, 0.25, cheap="zero-shot", strong="few-shot", resamples=500, seed=3)
    assert again.estimates == ev.estimates  # seeded


def test_cluster_bootstrap_moves_whole_clusters():
    rng = np.random.default_rng(0)
    w = resample_weights(6, np.array(["a", "a", "b", "b", "c", "c"]), 50, rng)
    assert np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 2] == w[:, 3])
    assert np.all(w.sum(axis=1) == 6)
    assert np.all(resample_weights(6, None, 50, rng).sum(axis=1) == 6)


def test_a_confidence_unrelated_to_correctness_is_not_better_than_random():
    rng = np.random.default_rng(7)
    n = 400
    cheap = rng.random(n) < 0.3
    strong = rng.random(n) < 0.6
    r = RouteItems(
        ids=[str(k) for k in range(n)],
        cheap_quality=cheap.astype(float),
        strong_quality=strong.astype(float),
        cheap_cost=np.full(n, 1.0),
        strong_cost=np.full(n, 2.5),
        confidence=rng.random(n),  # noise
    )
    ev = router_evidence(r, float(np.quantile(r.confidence, 0.4)), resamples=1000)
    est = ev.estimates["router.vs_random"]
    assert est.value < 0  # pays twice for its escalations and picks them at random
    assert est.low < 0
    assert abs(ev.value("router.apgr") - 0.5) < 0.15


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="3 items"):
        RouteItems(["a", "b", "c"], *(np.zeros(2) for _ in range(5)))
    with pytest.raises(ValueError, match="NaN"):
        items([np.nan, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="cost must be >= 0"):
        items([0.1, 0.2, 0.3, 0.4], cheap_c=-1)
    with pytest.raises(ValueError, match="recovered"):
        cpt(sweep(HAND), 1.5)


def test_calibration_flags_a_share_outside_the_band_and_refits_the_threshold():
    from llmrelease.tasks.routing.calibration import calibrate

    # ten recent requests; the released threshold -0.5 escalates the six below it
    conf = np.array([-0.9, -0.8, -0.7, -0.65, -0.6, -0.55, -0.3, -0.2, -0.1, -0.05])
    cal = calibrate(conf, -0.5, target=0.3, band=0.1)
    assert cal.share == pytest.approx(0.6) and not cal.within_band
    assert cal.refit_share == pytest.approx(0.3) and cal.refit_threshold == pytest.approx(-0.65)
    assert "OUTSIDE" in cal.describe()
    assert calibrate(conf, -0.68, target=0.3, band=0.1).within_band  # escalates 3 of 10
