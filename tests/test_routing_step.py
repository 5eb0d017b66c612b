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
