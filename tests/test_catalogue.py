"""The metric catalogue: what a metric means comes from its producer, never from its name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmrelease.catalogue import MetricCatalogue, MetricCollision, MetricDef
from llmrelease.errors import SpecError
from llmrelease.project import load_app
from llmrelease.tasks.gates.decisions import evaluate_gates
from tests.conftest import read_yaml

APP = "support-triage"


def _edit(path: Path, edit) -> None:
    data = read_yaml(path)
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _with_scorer(project: Path, scorer: dict, gate: dict) -> None:
    _edit(project / "evalsets" / APP / "tickets.card.yaml", lambda c: c["scorers"].append(scorer))
    _edit(project / "registry" / APP / "gates.yaml", lambda g: g.update(gates=[gate]))


def _compare(spec, metric: str, cand: float, champ: float, n: int = 40):
    items = {metric: {f"t{i}": cand for i in range(n)}}
    champion = {metric: {f"t{i}": champ for i in range(n)}}
    return evaluate_gates(spec.gates, {metric: cand}, items, champion, catalogue=spec.catalogue).results[0]


def test_a_quality_scorer_named_guard_something_is_still_higher_is_better(project: Path) -> None:
    """A category-accuracy scorer named guard_quality fell from 1.0 to 0.2 and passed (read as a
    lower-is-better guard rate from its name). It fails now."""
    gate = {"name": "quality-vs-champion", "metric": "tickets.guard_quality", "max_regression": 0.02}
    _with_scorer(project, {"name": "guard_quality", "kind": "exact_match", "field": "category"}, gate)
    spec = load_app(project, APP)
    assert spec.catalogue["tickets.guard_quality"].direction == "higher"
    result = _compare(spec, "tickets.guard_quality", cand=0.2, champ=1.0)
    assert result.verdict == "fail" and result.threshold == "drop <= 0.02 vs champion"


def test_a_scorer_may_declare_that_lower_is_better(project: Path) -> None:
    gate = {"name": "refusals-vs-champion", "metric": "tickets.refusal", "max_regression": 0.02}
    _with_scorer(project, {"name": "refusal", "kind": "exact_match", "direction": "lower"}, gate)
    spec = load_app(project, APP)
    rise = _compare(spec, "tickets.refusal", cand=0.5, champ=0.0)
    assert rise.verdict == "fail" and rise.threshold == "rise <= 0.02 vs champion"
    assert _compare(spec, "tickets.refusal", cand=0.0, champ=0.5).verdict == "pass"


@pytest.mark.parametrize("name", ["shadow", "champion", "candidate", "serving"])
def test_an_evalset_may_not_take_an_aggregate_namespace(project: Path, name: str) -> None:
    ev = project / "evalsets" / APP
    (ev / "tickets.jsonl").rename(ev / f"{name}.jsonl")
    (ev / "tickets.card.yaml").rename(ev / f"{name}.card.yaml")
    with pytest.raises(SpecError, match=f"an evalset may not be called '{name}'"):
        load_app(project, APP)


def test_an_evalset_name_with_a_dot_is_refused(project: Path) -> None:
    ev = project / "evalsets" / APP
    (ev / "tickets.jsonl").rename(ev / "tickets.v2.jsonl")
    (ev / "tickets.card.yaml").rename(ev / "tickets.v2.card.yaml")
    with pytest.raises(SpecError, match="may hold only letters"):
        load_app(project, APP)


def test_a_scorer_may_not_take_a_builtin_score_name(project: Path) -> None:
    gate = {"name": "g", "metric": "tickets.category_accuracy", "min": 0.1}
    _with_scorer(project, {"name": "json_parses", "kind": "exact_match"}, gate)
    with pytest.raises(SpecError, match="a score the pipeline writes itself") as info:
        load_app(project, APP)
    assert info.value.field == "scorers[2].name" and info.value.line


def test_two_producers_of_one_name_collide() -> None:
    one = MetricDef("a.b", "higher", True, "score", "scorer:exact_match")
    with pytest.raises(MetricCollision, match="declared twice"):
        MetricCatalogue([one, MetricDef("a.b", "lower", True, "rate", "guard")])


def test_the_demo_catalogue_declares_every_gate_metric(project: Path) -> None:
    spec = load_app(project, APP)
    cat = spec.catalogue
    assert cat["tickets.guard_response_unsafe"].direction == "lower" and cat.per_item("tickets.json_parses")
    assert cat["shadow.ttft_p95_ratio"].producer == "shadow" and not cat.per_item("shadow.ttft_p95_ratio")
    assert {g.metric for g in spec.gates.gates} <= set(cat)


def test_a_gate_on_a_metric_the_catalogue_lacks_fails_closed(project: Path) -> None:
    spec = load_app(project, APP)
    result = evaluate_gates(spec.gates, {}, {}, None, catalogue=MetricCatalogue([])).results[0]
    assert result.verdict == "fail" and "not in the app's metric catalogue" in result.evidence


def test_serving_and_cost_are_declared_aggregates_a_gate_may_bound(project: Path) -> None:
    gate = {"name": "cost-ceiling", "metric": "cost.per_1k_requests", "max": 0.01}
    _edit(project / "registry" / APP / "gates.yaml", lambda g: g.update(gates=[gate]))
    spec = load_app(project, APP)  # the demo model has token prices
    cost = spec.catalogue["cost.per_1k_requests"]
    assert (cost.direction, cost.per_item, cost.producer) == ("lower", False, "cost")
    assert spec.catalogue["serving.tokens_per_s"].direction == "higher"
    cheap, dear = (
        evaluate_gates(spec.gates, {"cost.per_1k_requests": v}, {}, None, catalogue=spec.catalogue).results[0]
        for v in (0.005, 0.02)
    )
    assert cheap.verdict == "pass" and dear.verdict == "fail"

    gate = {"name": "cost-vs-champion", "metric": "cost.per_1k_requests", "max_regression": 0.1}
    _edit(project / "registry" / APP / "gates.yaml", lambda g: g.update(gates=[gate]))
    with pytest.raises(SpecError, match="an aggregate of the cost step"):
        load_app(project, APP)
