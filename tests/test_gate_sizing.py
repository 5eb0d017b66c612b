"""The evalset-size planner on fixed numbers: its sizes agree with the gate that will judge them."""

from __future__ import annotations

import numpy as np
import pytest

from llmrelease.catalogue import MetricCatalogue, MetricDef
from llmrelease.specs import GatePolicy
from llmrelease.tasks.gates.sizing import size_gates
from llmrelease.tasks.gates.statistics import paired_comparison

CATALOGUE = MetricCatalogue(
    [
        MetricDef("e.acc", "higher", True, "score", "scorer:exact_match"),
        MetricDef("e.bad", "lower", True, "rate", "guard"),
    ]
)


def policy(*gates: dict, **statistics) -> GatePolicy:
    return GatePolicy(version="g", statistics=statistics or None, gates=list(gates))


def items(values) -> dict[str, float]:
    return {f"i{k:04d}": float(v) for k, v in enumerate(values)}


ACC = {"name": "acc", "metric": "e.acc", "max_regression": 0.05}
BAD = {"name": "bad", "metric": "e.bad", "max_regression": 0.05}


def test_the_planned_size_gives_an_equal_candidate_the_planned_power() -> None:
    """Plan with the observed spread, then draw candidates equal to the champion at that size: the
    gate passes about ``power`` of them (the planner and the gate agree)."""
    rng = np.random.default_rng(0)
    champ = (rng.uniform(size=100) < 0.5).astype(float)
    [plan] = size_gates(policy(ACC), CATALOGUE, {"e.acc": items(champ)}, observed_sd={"acc": 0.4})
    assert not plan.enough and plan.items_needed is not None and plan.items_needed > 100
    n = plan.items_needed
    passes = 0
    for seed in range(200):
        r = np.random.default_rng(seed)
        diffs = r.choice([-1.0, 0.0, 1.0], size=n, p=[0.08, 0.84, 0.08])  # sd 0.4, mean 0
        passes += paired_comparison(diffs, margin=0.05, resamples=400, seed=seed).verdict == "pass"
    assert 0.7 <= passes / 200 <= 0.92


def test_without_an_observed_spread_the_plan_assumes_no_correlation() -> None:
    champ = [1.0, 0.0] * 50  # sd 0.5
    [plan] = size_gates(policy(ACC), CATALOGUE, {"e.acc": items(champ)})
    assert plan.sd == pytest.approx(np.sqrt(2) * np.std(champ, ddof=1))
    assert "no correlation" in plan.sd_source


def test_a_rate_that_never_moves_is_planned_by_the_rule_of_three() -> None:
    [plan] = size_gates(policy({**BAD, "max_regression": 0.02}), CATALOGUE, {"e.bad": items([0] * 72)})
    assert plan.items_needed == 149 and not plan.enough and plan.mde_now == pytest.approx(0.0408, abs=1e-4)


def test_a_family_is_planned_at_holms_first_step_and_costs_are_priced() -> None:
    scores = {"e.acc": items([1.0, 0.0] * 50), "e.bad": items([0.0, 1.0] * 50)}
    plans = size_gates(policy(ACC, BAD), CATALOGUE, scores, cost_per_item=0.002, seconds_per_item=0.5)
    alone = size_gates(policy(ACC), CATALOGUE, scores)[0]
    assert [p.confidence for p in plans] == [pytest.approx(0.975)] * 2
    assert plans[0].items_needed > alone.items_needed
    assert plans[0].cost_needed == pytest.approx(0.002 * plans[0].items_needed)
    assert plans[0].seconds_needed == pytest.approx(0.5 * plans[0].items_needed)


def test_clusters_raise_the_size() -> None:
    rng = np.random.default_rng(2)
    champ = np.repeat((rng.uniform(size=20) < 0.5).astype(float), 10)  # whole clusters right or wrong
    labels = {f"i{k:04d}": f"c{k // 10}" for k in range(200)}
    flat = size_gates(policy(ACC), CATALOGUE, {"e.acc": items(champ)})[0]
    clustered = size_gates(policy(ACC), CATALOGUE, {"e.acc": items(champ)}, clusters={"e": labels})[0]
    assert clustered.design_effect > 5 and clustered.clusters_now == 20
    assert clustered.items_needed > 5 * flat.items_needed


def test_a_margin_override_and_bad_arguments() -> None:
    scores = {"e.acc": items([1.0, 0.0] * 50)}
    wide = size_gates(policy(ACC), CATALOGUE, scores, margin=0.2)[0]
    assert wide.margin == 0.2 and wide.enough
    with pytest.raises(ValueError, match="margin"):
        size_gates(policy(ACC), CATALOGUE, scores, margin=0)
    with pytest.raises(ValueError, match="power"):
        size_gates(policy(ACC), CATALOGUE, scores, power=1.0)


def test_a_gate_on_a_bound_is_sized_for_the_champions_distance_from_its_threshold() -> None:
    champ = [1.0] * 30 + [0.0] * 70  # 0.30
    floor = {"name": "floor", "metric": "e.acc", "min": 0.2, "on": "lower_bound"}
    [plan] = size_gates(policy(floor, ACC), CATALOGUE, {"e.acc": items(champ)})[1:]
    assert plan.gate == "floor" and plan.margin == pytest.approx(0.1) and plan.confidence == 0.95
    sd = np.std(champ, ddof=1)
    assert plan.items_needed == pytest.approx(((1.645 + 0.842) * sd / 0.1) ** 2, rel=0.05)
    below = size_gates(policy({**floor, "min": 0.4}), CATALOGUE, {"e.acc": items(champ)})[0]
    assert below.items_needed is None and not below.enough  # the champion itself would not clear it
    on_value = size_gates(policy({"name": "f", "metric": "e.acc", "min": 0.2}), CATALOGUE, {})
    assert on_value == []
