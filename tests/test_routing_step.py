"""The cascade applied to two routes' evaluations: alignment by item id, forced escalation on a schema
failure, and the router's own per-item scores on every metric (no engine: the evaluations are built)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmrelease.errors import InputError
from llmrelease.router_app import load_router
from llmrelease.tasks.evaluation.items import ItemIds, ScoreColumn, Scores
from llmrelease.tasks.evaluation.serving import ServingStats
from llmrelease.tasks.evaluation.step import Evaluation
from llmrelease.tasks.routing.step import judge, route_items, routed_scores

APP = "support-triage"


def evaluation(
    ids: list[str], columns: dict[str, list[float]], serving: dict[str, list[float]]
) -> Evaluation:
    item_ids = ItemIds(ids)
    scores = Scores(
        {k: ScoreColumn(item_ids, np.array(v, dtype=float)) for k, v in columns.items()},
        {k: float(np.mean(v)) for k, v in columns.items()},
    )
    return Evaluation(
        ServingStats(),
        scores,
        dict(scores.aggregates),
        item_ids={"tickets": item_ids},
        item_serving={k: ScoreColumn(item_ids, np.array(v, dtype=float)) for k, v in serving.items()},
    )


IDS = ["t1", "t2", "t3", "t4"]
CHEAP = evaluation(
    IDS,
    {"tickets.category_accuracy": [1, 0, 0, 1], "tickets.schema_conforms": [1, 1, 1, 0]},
    {"tickets.cost": [1, 1, 1, 1], "tickets.mean_logprob": [-0.1, -0.9, -0.5, -0.05]},
)
# The strong route's evaluation lists the same items in another order: alignment is by id.
STRONG = evaluation(
    ["t4", "t3", "t2", "t1"],
    {"tickets.category_accuracy": [1, 1, 1, 0], "tickets.schema_conforms": [1, 1, 1, 1]},
    {"tickets.cost": [3, 3, 3, 3], "tickets.mean_logprob": [-0.2, -0.2, -0.2, -0.2]},
)


def test_route_items_align_by_id_and_force_out_schema_failures(project: Path) -> None:
    router = load_router(project, APP)
    items = route_items(router, CHEAP, STRONG, None)
    assert items.ids == IDS
    assert items.strong_quality.tolist() == [0, 1, 1, 1]
    assert items.strong_cost.tolist() == [3, 3, 3, 3]
    # t4 failed the schema on the cheap route: it escalates whatever its confidence
    assert items.confidence[:3].tolist() == [-0.1, -0.9, -0.5] and np.isneginf(items.confidence[3])


def test_routed_scores_take_the_strong_answer_where_escalated() -> None:
    escalate = {"tickets": np.array([False, True, False, True])}
    routed = routed_scores(CHEAP, STRONG, escalate)
    assert routed.items["tickets.category_accuracy"].values.tolist() == [1, 1, 0, 1]
    assert routed.aggregates["tickets.schema_conforms"] == 1.0


def test_judge_fits_the_threshold_and_serves_the_escalated_answers(project: Path) -> None:
    # target_strong_share 0.3: one of four (0.25) is nearest, and the forced t4 is that one
    router = load_router(project, APP)
    result = judge(router, {"zero-shot": CHEAP, "few-shot": STRONG}, None)
    assert result.threshold_source.startswith("fitted")
    assert result.escalated["tickets"].tolist() == [False, False, False, True]
    assert result.routed.aggregates["tickets.category_accuracy"] == 0.5
    assert result.evidence.value("router.strong_share") == 0.25
    assert result.metrics["router.tickets.strong_share"] == 0.25
    assert {r.name for r in result.report.results} >= {"orders-better-than-random", "accuracy-vs-few-shot"}


def test_a_backend_without_log_probabilities_is_a_clear_error(project: Path) -> None:
    router = load_router(project, APP)
    blind = evaluation(
        IDS,
        {"tickets.category_accuracy": [1, 0, 0, 1]},
        {"tickets.cost": [1, 1, 1, 1], "tickets.mean_logprob": [np.nan] * 4},
    )
    with pytest.raises(InputError, match="no token log-probabilities"):
        route_items(router, blind, STRONG, None)


def classifier_router(project: Path, extra: str = ""):
    path = project / "registry" / APP / "router.yaml"
    text = path.read_text()
    start, end = text.index("policy:"), text.index("quality:")
    path.write_text(
        text[:start] + f"policy:\n  kind: classifier\n  algorithm: knn\n  neighbours: 1\n{extra}"
        "  target_strong_share: 0.5\n" + text[end:]
    )
    return load_router(project, APP)


# Two tickets of each kind: the cheap route is enough on the billing ones only.
REQUESTS = {
    "tickets": {
        "t1": "billing refund invoice",
        "t2": "login password reset",
        "t3": "login password locked",
        "t4": "billing refund charge",
    }
}


def test_judge_with_a_classifier_routes_on_out_of_fold_predictions_and_pays_one_call(project: Path) -> None:
    router = classifier_router(project)
    result = judge(router, {"zero-shot": CHEAP, "few-shot": STRONG}, None, REQUESTS)
    assert result.items.pays_both is False and result.classifier is not None
    # Leave-one-out (4 items, 5 folds): each ticket's nearest other ticket is its twin, whose label
    # (cheap enough on billing) it inherits: the two login tickets go to the strong route.
    assert result.escalated["tickets"].tolist() == [False, True, True, False]
    assert result.routed.aggregates["tickets.category_accuracy"] == 1.0
    # one call each: (1 + 3 + 3 + 1) / 4 per request, not the cascade's (1 + 4 + 4 + 1) / 4
    assert result.evidence.value("router.cost_per_1k_requests") == pytest.approx(2000)
    assert result.evidence.pays_both is False
    # the schema failure of t4 on the cheap route does not force it out: no cheap call comes first
    assert not np.isneginf(result.items.confidence).any()


def test_a_classifier_router_without_requests_or_with_one_cluster_is_refused(project: Path) -> None:
    router = classifier_router(project)
    with pytest.raises(ValueError, match="pass requests"):
        judge(router, {"zero-shot": CHEAP, "few-shot": STRONG}, None)
    one_cluster = {i: "same" for i in IDS}
    with pytest.raises(InputError, match="at least 2 clusters"):
        judge(router, {"zero-shot": CHEAP, "few-shot": STRONG}, one_cluster, REQUESTS)
