"""Gate decisions: absolute thresholds, and non-inferiority against the champion on the same items.

Pure logic; no server. Non-inferiority uses a seeded paired bootstrap (scipy) on per-item
differences, so noise neither blocks a good candidate nor lets a bad one through, and the same
inputs always give the same verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from llmrelease.specs import Bootstrap, GatePolicy

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
    )
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def evaluate_gates(
    policy: GatePolicy,
    aggregates: dict[str, float],
    items: dict[str, dict[str, float]],
    champion_items: dict[str, dict[str, float]] | None,
    *,
    champion_version: str | None = None,
) -> GateReport:
    """Every gate's value, rule, interval and verdict. With no champion, comparison gates are skipped."""
    report = GateReport(champion_version=champion_version, bootstrap=policy.bootstrap.model_dump())
    for gate in policy.gates:
        value = aggregates.get(gate.metric)
        if gate.kind == "absolute":
            if value is None:
                report.results.append(
                    GateResult(
                        gate.name, gate.metric, gate.kind, None, "-", "fail", "metric was not computed"
                    )
                )
                continue
            if gate.min is not None:
                ok, rule = value >= gate.min, f">= {gate.min:g}"
            else:
                assert gate.max is not None
                ok, rule = value <= gate.max, f"<= {gate.max:g}"
            report.results.append(
                GateResult(
                    gate.name,
                    gate.metric,
                    gate.kind,
                    value,
                    rule,
                    "pass" if ok else "fail",
                    f"{value:.4f} {'meets' if ok else 'misses'} {rule}",
                    n=len(items.get(gate.metric, {})),
                )
            )
            continue

        margin = float(gate.max_regression or 0.0)
        rule = f"drop <= {margin:g} vs champion"
        if champion_items is None:
            report.results.append(
                GateResult(
                    gate.name,
                    gate.metric,
                    gate.kind,
                    value,
                    rule,
                    "skipped",
                    "no champion yet: first release",
                )
            )
            continue
        cand, champ = items.get(gate.metric, {}), champion_items.get(gate.metric, {})
        common = sorted(set(cand) & set(champ))
        if not common:
            report.results.append(
                GateResult(
                    gate.name,
                    gate.metric,
                    gate.kind,
                    value,
                    rule,
                    "fail",
                    "no items in common with the champion: cannot compare",
                )
            )
            continue
        diffs = np.array([cand[i] - champ[i] for i in common])
        delta, lo, hi = paired_bootstrap(diffs, policy.bootstrap)
        champ_value = float(np.mean([champ[i] for i in common]))
        ok = lo >= -margin
        conf = int(round(policy.bootstrap.confidence * 100))
        evidence = (
            f"paired on {len(common)} items: delta {delta:+.4f}, {conf}% CI [{lo:+.4f}, {hi:+.4f}]; "
            f"lower bound {'>=' if ok else '<'} {-margin:+.4f}"
        )
        report.results.append(
            GateResult(
                gate.name,
                gate.metric,
                gate.kind,
                value,
                rule,
                "pass" if ok else "fail",
                evidence,
                champion_value=champ_value,
                delta=delta,
                ci_low=lo,
                ci_high=hi,
                n=len(common),
            )
        )
    return report
