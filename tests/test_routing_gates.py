"""Router gates: a router no better than random at equal cost is never promoted; a good one passes."""

from __future__ import annotations

import numpy as np
import pytest

from llmrelease.specs import Gate, GateStatistics
from llmrelease.tasks.routing.cascade import RouteItems, escalated, fit_threshold
from llmrelease.tasks.routing.evidence import router_evidence
from llmrelease.tasks.routing.gates import judge_router, paired_differences

STATS = GateStatistics(confidence=0.95, resamples=1000, seed=1)
GATES = [
    Gate(name="apgr", metric="router.apgr", min=0.5, on="lower_bound"),
    Gate(name="vs-random", metric="router.vs_random", min=0.0, on="lower_bound"),
    Gate(name="cost", metric="router.cost_ratio", max=0.8, on="upper_bound"),
    Gate(name="quality", metric="router.quality", max_regression=0.1),
]


def routes(n: int, *, informative: bool, seed: int = 0) -> RouteItems:
    """Cheap right 50% of the time, strong 80%; the cheap route's confidence either knows when the
    cheap answer is wrong (informative) or is noise."""
    rng = np.random.default_rng(seed)
    cheap = (rng.random(n) < 0.5).astype(float)
    strong = np.maximum(cheap, (rng.random(n) < 0.6).astype(float))
    noise = rng.random(n)
    confidence = (cheap + 0.3 * noise - 1.5) if informative else noise - 1.5
    return RouteItems(
        ids=[f"t{k:04d}" for k in range(n)],
        cheap_quality=cheap,
        strong_quality=strong,
        cheap_cost=np.full(n, 0.5),
        strong_cost=np.full(n, 4.0),
        confidence=confidence,
    )


def judge(items: RouteItems, share: float = 0.5):
    t = fit_threshold(items.confidence, share)
    ev = router_evidence(items, t, level=2 * STATS.confidence - 1, resamples=STATS.resamples, seed=STATS.seed)
    return judge_router(GATES, items, t, ev, STATS)


def test_a_router_no_better_than_random_at_equal_cost_is_rejected():
    report = judge(routes(300, informative=False))
    rows = {r.name: r for r in report.results}
    assert rows["vs-random"].verdict in ("fail", "inconclusive")
    assert rows["apgr"].verdict != "pass"
    assert not report.passed


def test_a_router_whose_confidence_knows_its_mistakes_passes():
    report = judge(routes(300, informative=True))
    rows = {r.name: r for r in report.results}
    assert rows["vs-random"].verdict == "pass", rows["vs-random"].evidence
    assert rows["apgr"].verdict == "pass"
    assert rows["quality"].verdict == "pass"
    assert rows["cost"].verdict == "pass"
    assert report.passed and report.decision == "pass"


def test_too_few_items_is_inconclusive_not_a_pass():
    report = judge(routes(12, informative=True, seed=3))
    assert report.decision != "pass"


def test_paired_differences_by_hand():
    # cheap right on items 2 and 3, strong on 0, 1 and 2; costs 1 and 3; items 0 and 1 escalate
    items = RouteItems(
        ["a", "b", "c", "d"],
        np.array([0.0, 0, 1, 1]),
        np.array([1.0, 1, 1, 0]),
        np.full(4, 1.0),
        np.full(4, 3.0),
        np.array([0.1, 0.2, 0.3, 0.4]),
    )
    d = paired_differences(items, 0.25)
    # routed = [1, 1, 1, 1]; random at equal cost has share 0.75: 0.25 * cheap + 0.75 * strong
    assert d["router.vs_strong"].tolist() == [0, 0, 0, 1]
    assert d["router.vs_random"] == pytest.approx([0.25, 0.25, 0, 0.75])


def test_a_quality_gap_that_does_not_exist_fails_the_gap_gates():
    items = routes(100, informative=True)
    flat = RouteItems(
        items.ids,
        items.cheap_quality,
        items.cheap_quality,
        items.cheap_cost,
        items.strong_cost,
        items.confidence,
    )
    report = judge(flat)
    apgr = next(r for r in report.results if r.name == "apgr")
    assert apgr.verdict == "fail" and "no gap" in apgr.evidence


@pytest.mark.parametrize(
    ("confidence", "target", "escalates"),
    [
        ([0.1, 0.2, 0.3, 0.4], 0.5, 2),
        ([0.1, 0.2, 0.3, 0.4], 0.3, 1),  # 0.25 is nearer than 0.5
        (
            [0.1, 0.2, 0.2, 0.4],
            0.5,
            1,
        ),  # the tie (0.2, 0.2) is whole: 0.25 and 0.75 are equally near, lower wins
        ([-np.inf, -np.inf, 0.3, 0.4], 0.25, 2),  # forced escalations count and cannot be undone
        ([-np.inf, 0.2, 0.3, 0.4], 0.5, 2),
    ],
)
def test_fit_threshold_escalates_the_share_nearest_the_target(confidence, target, escalates):
    items = RouteItems(["a", "b", "c", "d"], *(np.zeros(4) for _ in range(4)), np.array(confidence))
    t = fit_threshold(items.confidence, target)
    assert int(escalated(items, t).sum()) == escalates
