"""The router page, pure: what it says for a cascade and for a classifier, the best single route, and
the same bytes for the same inputs."""

from __future__ import annotations

from dataclasses import replace

from llmrelease.tasks.routing.evidence import router_evidence
from llmrelease.tasks.routing.gates import judge_router
from llmrelease.tasks.routing.report import best_route, router_html
from tests.test_routing_gates import GATES, STATS, routes


def page(pays_both: bool) -> str:
    items = replace(routes(120, informative=True), pays_both=pays_both)
    ev = router_evidence(items, -1.2, cheap="small", strong="big", resamples=200, seed=1)
    report = judge_router(GATES, items, -1.2, ev, STATS)
    return router_html(
        app="demo",
        router_version="r1",
        quality_metric="tickets.accuracy",
        threshold=-1.2,
        threshold_source="spec",
        evidence=ev,
        report=report,
        routes={"small": "prompt a", "big": "prompt b"},
        policy="cascade on the cheap answer's mean_logprob" if pays_both else "classifier (knn)",
    )


def test_cascade_page_says_escalations_pay_twice_and_names_the_best_route() -> None:
    html = page(True)
    assert "(both calls paid)" in html and "Policy: cascade" in html
    assert "The best single route on these items is &#x27;big&#x27;" in html
    assert "out-of-fold" not in html
    assert html == page(True)  # deterministic


def test_classifier_page_says_one_call_each_and_how_its_curve_was_drawn() -> None:
    html = page(False)
    assert "(one call each)" in html and "(both calls paid)" not in html
    assert "both routes paid for every request" not in html and "the strong route alone" in html
    assert "out-of-fold" in html and "Policy: classifier (knn)" in html


def test_best_route_is_the_better_one_alone_and_the_cheaper_on_a_tie() -> None:
    items = routes(50, informative=False)
    ev = router_evidence(items, -1.0, cheap="small", strong="big", resamples=100)
    assert best_route(ev) == "big"
    tie = replace(items, strong_quality=items.cheap_quality)
    assert best_route(router_evidence(tie, -1.0, cheap="small", strong="big", resamples=100)) == "small"
