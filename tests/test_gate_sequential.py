"""Sequential gates on fixed and simulated streams: which gates are watched, when they stop, and
that stopping at the first decided look keeps the false-pass rate. No server."""

from __future__ import annotations

import numpy as np
import pytest

from llmrelease.catalogue import MetricCatalogue, MetricDef
from llmrelease.specs import GatePolicy
from llmrelease.tasks.gates.decisions import evaluate_gates
from llmrelease.tasks.gates.sequential import SequentialMonitor

CATALOGUE = MetricCatalogue(
    [
        MetricDef("e.acc", "higher", True, "score", "scorer:exact_match"),
        MetricDef("e.unsafe", "lower", True, "rate", "guard"),
        MetricDef("f.acc", "higher", True, "score", "scorer:exact_match"),
        MetricDef("f.schema", "higher", True, "rate", "structured_output"),
    ]
)


def policy(*gates: dict, method: str = "pocock") -> GatePolicy:
    return GatePolicy(
        version="g", statistics={"sequential": True, "sequential_method": method}, gates=list(gates)
    )


def ids(n: int, prefix: str = "i") -> list[str]:
    return [f"{prefix}{k:05d}" for k in range(n)]


def test_only_evalsets_whose_every_comparison_gate_is_scored_on_the_stream_are_watched() -> None:
    pol = policy(
        {"name": "e-acc", "metric": "e.acc", "max_regression": 0.05},
        {"name": "e-unsafe", "metric": "e.unsafe", "max_regression": 0.05},  # the guard runs later
        {"name": "f-acc", "metric": "f.acc", "max_regression": 0.05},
        {"name": "f-schema", "metric": "f.schema", "max_regression": 0.05},
        {"name": "floor", "metric": "f.acc", "min": 0.1},
    )
    champion = {m: dict.fromkeys(ids(10), 1.0) for m in ("e.acc", "e.unsafe", "f.acc", "f.schema")}
    monitor = SequentialMonitor.for_policy(pol, CATALOGUE, champion, {"e": 10, "f": 10})
    assert set(monitor.watched) == {"f"} and not monitor.watches("e")
    assert monitor.alpha_each == pytest.approx(0.05 / 4) and monitor.alpha_rest == pytest.approx(0.05 / 2)
    clustered = SequentialMonitor.for_policy(pol, CATALOGUE, champion, {"f": 10}, frozenset({"f"}))
    assert not clustered.watched and clustered.alpha_rest == pytest.approx(0.05)


def test_a_clear_regression_stops_early_and_the_decision_sticks() -> None:
    pol = policy({"name": "acc", "metric": "f.acc", "max_regression": 0.05})
    n = 2000
    rng = np.random.default_rng(1)
    champ = (rng.uniform(size=n) < 0.8).astype(float)
    cand = champ * (rng.uniform(size=n) < 0.6)  # loses 40% of the champion's right answers
    all_ids = ids(n)
    monitor = SequentialMonitor.for_policy(
        pol, CATALOGUE, {"f.acc": dict(zip(all_ids, champ, strict=True))}, {"f": n}
    )
    stopped_at = None
    for start in range(0, n, 50):
        chunk = all_ids[start : start + 50]
        if monitor.update("f", chunk, {"f.acc": cand[start : start + 50]}) and stopped_at is None:
            stopped_at = monitor.used["f"]
    assert stopped_at is not None and stopped_at < 400
    [w] = monitor.watched["f"]
    assert w.decision == "fail" and w.decided_at is not None and w.decided_at <= stopped_at
    report = evaluate_gates(
        pol,
        {"f.acc": float(cand.mean())},
        {"f.acc": dict(zip(all_ids, cand, strict=True))},
        {"f.acc": dict(zip(all_ids, champ, strict=True))},
        catalogue=CATALOGUE,
        sequential=monitor,
    )
    g = report.results[0]
    assert g.verdict == "fail" and g.ci_high < -0.05 and "Pocock alpha spending" in g.method
    assert report.statistics["watched_gates"] == ["acc"]


def test_unwatched_comparison_gates_share_the_rest_of_the_error_budget() -> None:
    pol = policy(
        {"name": "f-acc", "metric": "f.acc", "max_regression": 0.05},
        {"name": "e-unsafe", "metric": "e.unsafe", "max_regression": 0.05},
    )
    champ = {m: dict.fromkeys(ids(200), 0.0) for m in ("f.acc", "e.unsafe")}
    monitor = SequentialMonitor.for_policy(pol, CATALOGUE, champ, {"f": 200, "e": 200})
    report = evaluate_gates(
        pol, {"f.acc": 0.0, "e.unsafe": 0.0}, champ, champ, catalogue=CATALOGUE, sequential=monitor
    )
    unwatched = report.results[1]
    assert unwatched.confidence == pytest.approx(0.975) and report.statistics["family_alpha"] == 0.025
    assert report.results[0].verdict == "inconclusive"  # never fed: undecided, never PASS


@pytest.mark.parametrize(
    ("method", "n", "chunk"),
    [("pocock", 500, 25), ("pocock", 72, 8), ("obrien_fleming", 500, 25), ("confidence_sequence", 500, 25)],
)
def test_stopping_at_the_first_decided_look_keeps_the_false_pass_rate(
    method: str, n: int, chunk: int
) -> None:
    """Streams whose true difference sits exactly at the margin, looked at every chunk: the gate
    may pass at most ~5% of them (a fixed-horizon bound peeked at every look would pass far
    more), also with the demo's 72 items in chunks of 8, where the variance is estimated from few."""
    margin, streams = 0.05, 300
    pol = policy({"name": "acc", "metric": "f.acc", "max_regression": margin}, method=method)
    all_ids = ids(n)
    champ = np.ones(n)
    false_passes = 0
    for seed in range(streams):
        rng = np.random.default_rng(seed)
        # P(lose) - P(win) = margin: at the margin, exactly as bad as the gate allows.
        u = rng.uniform(size=n)
        diffs = np.where(u < 0.15 + margin / 2, -1.0, np.where(u < 0.30, 1.0, 0.0))
        monitor = SequentialMonitor.for_policy(
            pol, CATALOGUE, {"f.acc": dict(zip(all_ids, champ, strict=True))}, {"f": n}
        )
        for start in range(0, n, chunk):
            window = slice(start, start + chunk)
            if monitor.update("f", all_ids[window], {"f.acc": 1.0 + diffs[window]}):
                break
        false_passes += monitor.watched["f"][0].decision == "pass"
    assert false_passes / streams <= 0.07
