"""Gate decisions: absolute thresholds, and non-inferiority against the champion on the same items.

Pure logic; no server. Non-inferiority uses a seeded paired bootstrap (scipy) on per-item
differences, so noise neither blocks a good candidate nor lets a bad one through, and the same
inputs always give the same verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from llmrelease.catalogue import MetricCatalogue, MetricDef
from llmrelease.specs import Bootstrap, Gate, GatePolicy
from llmrelease.tasks.evaluation.items import paired

__all__ = ["GateResult", "GateReport", "paired_bootstrap", "evaluate_gates"]

Verdict = Literal["pass", "fail", "skipped"]


@dataclass(frozen=True)
class GateResult:
    name: str
    metric: str
    kind: str
    value: float | None
    """The candidate's aggregate (mean of per-item scores)."""
    threshold: str
    """The rule as written, e.g. '>= 0.40' or 'drop <= 0.05 vs champion'."""
    verdict: Verdict
    evidence: str
    champion_value: float | None = None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None


@dataclass
class GateReport:
    results: list[GateResult] = field(default_factory=list)
    champion_version: str | None = None
    bootstrap: dict[str, float | int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(r.verdict != "fail" for r in self.results)

    @property
    def failed(self) -> list[GateResult]:
        return [r for r in self.results if r.verdict == "fail"]

    def to_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "champion_version": self.champion_version,
            "bootstrap": self.bootstrap,
            "gates": [asdict(r) for r in self.results],
        }


def paired_bootstrap(diffs: np.ndarray, settings: Bootstrap) -> tuple[float, float, float]:
    """Mean of per-item differences and its percentile bootstrap interval (seeded)."""
    diffs = np.asarray(diffs, dtype=float)
    mean = float(diffs.mean())
    if diffs.size < 2 or np.all(diffs == diffs[0]):
        return mean, mean, mean  # no variation: the interval is the point
    from scipy.stats import bootstrap

    res = bootstrap(
        (diffs,),
        np.mean,
        n_resamples=settings.resamples,
        confidence_level=settings.confidence,
        method="percentile",
        random_state=np.random.default_rng(settings.seed),
        vectorized=True,
        # Resample in batches of at most ~2M values so memory stays small on large evalsets.
        batch=max(1, min(settings.resamples, 2_000_000 // diffs.size)),
    )
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def _rule(gate: Gate, metric: MetricDef | None) -> str:
    if gate.min is not None:
        return f">= {gate.min:g}"
    if gate.max is not None:
        return f"<= {gate.max:g}"
    worse = "rise" if metric is not None and metric.direction == "lower" else "drop"
    return f"{worse} <= {gate.max_regression:g} vs champion"


def _decide(
    gate: Gate,
    metric: MetricDef | None,
    value: float | None,
    items: Mapping[str, float],
    champion_items: Mapping[str, Mapping[str, float]] | None,
    bootstrap: Bootstrap,
) -> tuple[Verdict, str, dict[str, Any]]:
    """(verdict, evidence, extra GateResult fields) for one gate. Missing data fails closed."""
    if metric is None:
        return "fail", f"'{gate.metric}' is not in the app's metric catalogue: its meaning is unknown", {}
    if gate.kind == "absolute":
        if value is None and champion_items is None and metric.producer == "shadow":
            return "skipped", "no champion yet: nothing to shadow", {}
        if value is None:
            return "fail", "metric was not computed", {}
        ok = value >= gate.min if gate.min is not None else value <= (gate.max or 0.0)
        return (
            ("pass" if ok else "fail"),
            f"{value:.4f} {'meets' if ok else 'misses'} {_rule(gate, metric)}",
            {"n": len(items)},
        )
    if champion_items is None:
        return "skipped", "no champion yet: first release", {}
    if not metric.per_item:
        return "fail", f"'{gate.metric}' has no per-item scores: it cannot be compared item by item", {}
    cand, champ = paired(items, champion_items.get(gate.metric, {}))
    n = len(cand)
    if not n:
        return "fail", "no items in common with the champion: cannot compare", {}
    margin = float(gate.max_regression or 0.0)
    delta, lo, hi = paired_bootstrap(cand - champ, bootstrap)
    conf = int(round(bootstrap.confidence * 100))
    if metric.direction == "lower":
        # Delta is still (candidate - champion); a rise is the regression: its upper bound decides.
        ok = hi <= margin
        evidence = (
            f"paired on {n} items: delta {delta:+.4f}, {conf}% CI [{lo:+.4f}, {hi:+.4f}]; "
            f"upper bound {'<=' if ok else '>'} {margin:+.4f} (lower is better)"
        )
    else:
        ok = lo >= -margin
        evidence = (
            f"paired on {n} items: delta {delta:+.4f}, {conf}% CI [{lo:+.4f}, {hi:+.4f}]; "
            f"lower bound {'>=' if ok else '<'} {-margin:+.4f}"
        )
    extra = {
        "champion_value": float(champ.mean()),
        "delta": delta,
        "ci_low": lo,
        "ci_high": hi,
        "n": n,
    }
    return ("pass" if ok else "fail"), evidence, extra


def evaluate_gates(
    policy: GatePolicy,
    aggregates: dict[str, float],
    items: Mapping[str, Mapping[str, float]],
    champion_items: Mapping[str, Mapping[str, float]] | None,
    *,
    catalogue: MetricCatalogue,
    champion_version: str | None = None,
) -> GateReport:
    """Every gate's value, rule, interval and verdict. With no champion, comparison gates are skipped.

    Which way is worse comes from the catalogue (what the producer declared), never from the
    metric's name; a metric the catalogue does not know fails its gate."""
    report = GateReport(champion_version=champion_version, bootstrap=policy.bootstrap.model_dump())
    for gate in policy.gates:
        metric = catalogue.get(gate.metric)
        value = aggregates.get(gate.metric)
        verdict, evidence, extra = _decide(
            gate, metric, value, items.get(gate.metric, {}), champion_items, policy.bootstrap
        )
        report.results.append(
            GateResult(
                gate.name, gate.metric, gate.kind, value, _rule(gate, metric), verdict, evidence, **extra
            )
        )
    return report
