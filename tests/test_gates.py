"""Gate decisions and the paired bootstrap, on fixed numbers: no server needed."""

from __future__ import annotations

import numpy as np
import pytest

from llmrelease.catalogue import MetricCatalogue, MetricDef
from llmrelease.specs import Bootstrap, GatePolicy
from llmrelease.tasks.gates.decisions import evaluate_gates as _evaluate_gates
from llmrelease.tasks.gates.decisions import paired_bootstrap

CATALOGUE = MetricCatalogue(
    [
        MetricDef("e.acc", "higher", True, "score", "scorer:exact_match"),
        MetricDef("e.bad", "lower", True, "rate", "guard"),
    ]
)


def evaluate_gates(*args, catalogue: MetricCatalogue = CATALOGUE, **kwargs):
    return _evaluate_gates(*args, catalogue=catalogue, **kwargs)

POLICY = GatePolicy(
    version="g1",
    bootstrap=Bootstrap(resamples=2000, confidence=0.95, seed=7),
    gates=[
        {"name": "floor", "metric": "e.acc", "min": 0.5},
        {"name": "ceiling", "metric": "e.bad", "max": 0.1},
        {"name": "vs-champion", "metric": "e.acc", "max_regression": 0.05},
    ],
)


def items(values: list[float]) -> dict[str, float]:
    return {f"i{k}": float(v) for k, v in enumerate(values)}


def run(cand: list[float], champ: list[float] | None, bad: float = 0.0):
    acc = items(cand)
    agg = {"e.acc": float(np.mean(cand)), "e.bad": bad}
    champion = {"e.acc": items(champ)} if champ is not None else None
    return evaluate_gates(POLICY, agg, {"e.acc": acc}, champion, champion_version="1" if champ else None)


def test_bootstrap_is_reproducible_with_its_seed() -> None:
    rng = np.random.default_rng(0)
    diffs = rng.integers(-1, 2, size=80).astype(float)
    assert paired_bootstrap(diffs, POLICY.bootstrap) == paired_bootstrap(diffs, POLICY.bootstrap)
    other = paired_bootstrap(diffs, Bootstrap(resamples=2000, confidence=0.95, seed=8))
    assert other[0] == paired_bootstrap(diffs, POLICY.bootstrap)[0]


def test_bootstrap_interval_contains_mean_and_narrows_with_n() -> None:
    rng = np.random.default_rng(1)
    small = rng.normal(0.1, 1.0, size=30)
    large = rng.normal(0.1, 1.0, size=3000)
    m, lo, hi = paired_bootstrap(small, POLICY.bootstrap)
    assert lo <= m <= hi
    _, lo2, hi2 = paired_bootstrap(large, POLICY.bootstrap)
    assert (hi2 - lo2) < (hi - lo) / 3


def test_constant_differences_give_a_point_interval() -> None:
    assert paired_bootstrap(np.zeros(10), POLICY.bootstrap) == (0.0, 0.0, 0.0)


def test_first_release_skips_comparison_and_applies_absolute_gates() -> None:
    report = run([1, 1, 0, 1], None)
    verdicts = {r.name: r.verdict for r in report.results}
    assert verdicts == {"floor": "pass", "ceiling": "pass", "vs-champion": "skipped"}
    assert report.passed


def test_absolute_floor_fails_below_threshold() -> None:
    report = run([0, 0, 1, 0], None)
    assert not report.passed
    assert [r.name for r in report.failed] == ["floor"]


def test_absolute_ceiling_fails_above_threshold() -> None:
    assert [r.name for r in run([1, 1], None, bad=0.2).failed] == ["ceiling"]


def test_clearly_better_candidate_passes_non_inferiority() -> None:
    champ = [1, 0] * 40  # 0.5
    cand = [1, 1, 1, 0] * 20  # 0.75
    report = run(cand, champ)
    g = next(r for r in report.results if r.name == "vs-champion")
    assert g.verdict == "pass"
    assert g.delta == pytest.approx(0.25)
    assert g.ci_low is not None and g.ci_low > 0
    assert g.n == 80


def test_clearly_worse_candidate_fails_non_inferiority() -> None:
    champ = [1, 1, 1, 0] * 20
    cand = [1, 0] * 40
    g = next(r for r in run(cand, champ).results if r.name == "vs-champion")
    assert g.verdict == "fail"
    assert g.ci_high is not None and g.ci_high < 0


def test_small_noisy_drop_within_margin_is_not_blocked() -> None:
    # Identical except one item flips from right to wrong out of 200: delta -0.005, margin 0.05.
    champ = [1, 0] * 100
    cand = list(champ)
    cand[0] = 0
    g = next(r for r in run(cand, champ).results if r.name == "vs-champion")
    assert g.verdict == "pass"


def test_same_mean_but_noisy_small_sample_fails_when_interval_is_wide() -> None:
    # 10 items, 5 flipped each way: mean delta 0 but the interval reaches far below -0.05.
    champ = [1] * 5 + [0] * 5
    cand = [0] * 5 + [1] * 5
    g = next(r for r in run(cand, champ).results if r.name == "vs-champion")
    assert g.delta == 0
    assert g.verdict == "fail"


def test_pairing_uses_only_common_items() -> None:
    report = evaluate_gates(
        POLICY,
        {"e.acc": 1.0, "e.bad": 0.0},
        {"e.acc": {"a": 1.0, "b": 1.0, "new": 1.0}},
        {"e.acc": {"a": 1.0, "b": 1.0, "gone": 0.0}},
    )
    g = next(r for r in report.results if r.name == "vs-champion")
    assert g.n == 2


def test_no_common_items_fails_closed() -> None:
    report = evaluate_gates(
        POLICY, {"e.acc": 1.0, "e.bad": 0.0}, {"e.acc": {"a": 1.0}}, {"e.acc": {"b": 1.0}}
    )
    g = next(r for r in report.results if r.name == "vs-champion")
    assert g.verdict == "fail"
    assert "no items in common" in g.evidence


def test_missing_metric_fails_closed() -> None:
    report = evaluate_gates(POLICY, {"e.acc": 1.0}, {"e.acc": {"a": 1.0}}, None)
    assert [r.name for r in report.failed] == ["ceiling"]


def test_report_serialises_every_gate() -> None:
    d = run([1, 1], [1, 0]).to_dict()
    assert d["passed"] is True  # 1.0 >= 0.5, 0.0 <= 0.1, and the candidate is never worse
    assert [g["name"] for g in d["gates"]] == ["floor", "ceiling", "vs-champion"]
    assert d["bootstrap"]["seed"] == 7
