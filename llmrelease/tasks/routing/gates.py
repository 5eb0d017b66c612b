"""The router's gates: PASS, FAIL or INCONCLUSIVE on the router numbers, with the same evidence rows as
a candidate's gates (``GateResult``), so reports and MLflow show them the same way. Pure logic.

- ``router.quality`` with ``max_regression``: non-inferiority against the strong route, paired by
  item (and by cluster when the card names one): the gates' own ``paired_comparison``.
- ``router.vs_random`` / ``router.vs_strong`` (per-item differences) on a bound: the same paired
  comparison of ``d - threshold`` with margin 0, so a PASS shows the bound clears the threshold, a
  FAIL shows the opposite bound misses it, and anything between is INCONCLUSIVE.
- Every other number on a bound: its bootstrap percentile bound from ``.evidence`` (two-sided at
  ``2 * confidence - 1``, so each end is a one-sided bound at ``confidence``), with the same three
  verdicts. On ``value``: the point estimate against the threshold.
- A number that is undefined (no quality gap between the routes) FAILs its gate: there is nothing
  for a router to recover.

The router is promoted only when every gate passes. That is an intersection-union test (Berger 1982,
"Multiparameter hypothesis testing and acceptance sampling", Technometrics 24(4)): a router that
fails any one condition passes all of them with probability at most ``1 - confidence``, so the
promotion decision needs no multiplicity correction. (Each row's own statement is not corrected.)
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from llmrelease.specs import PAIRED_ROUTER_METRICS, ROUTER_METRICS, Gate, GateStatistics
from llmrelease.tasks.gates import statistics as st
from llmrelease.tasks.gates.decisions import GateReport, GateResult, Verdict
from llmrelease.tasks.routing.cascade import RouteItems, escalated, operating_point
from llmrelease.tasks.routing.evidence import RouterEvidence

__all__ = ["paired_differences", "judge_router"]


def paired_differences(items: RouteItems, threshold: float) -> dict[str, np.ndarray]:
    """Per item: the cascade's quality minus the strong route's, and minus the random router's
    expected quality at equal cost (its share held at the observed one)."""
    esc = escalated(items, threshold)
    routed = np.where(esc, items.strong_quality, items.cheap_quality)
    share = float(operating_point(items, esc).random_share[0])
    random = (1 - share) * items.cheap_quality + share * items.strong_quality
    return {"router.vs_strong": routed - items.strong_quality, "router.vs_random": routed - random}


def _rule(gate: Gate) -> str:
    on = f" ({gate.on.replace('_', ' ')})" if gate.on != "value" else ""
    if gate.min is not None:
        return f">= {gate.min:g}{on}"
    if gate.max is not None:
        return f"<= {gate.max:g}{on}"
    return f"drop <= {gate.max_regression:g} vs strong route"


def _comparison_row(gate: Gate, cmp: st.Comparison, value: float, shift: float, **extra) -> GateResult:
    return GateResult(
        name=gate.name,
        metric=gate.metric,
        kind=gate.kind,
        value=value,
        threshold=_rule(gate),
        verdict=cmp.verdict,
        evidence=f"{cmp.reason} ({cmp.method}, n={cmp.n})",
        ci_low=cmp.ci_low + shift,
        ci_high=cmp.ci_high + shift,
        n=cmp.n,
        bound=cmp.bound + shift,
        confidence=cmp.confidence,
        p_value=cmp.p_value,
        clusters=cmp.clusters,
        design_effect=cmp.design_effect,
        effective_n=cmp.effective_n,
        sd=cmp.sd,
        mde=cmp.mde if np.isfinite(cmp.mde) else None,
        items_needed=cmp.items_needed,
        method=cmp.method,
        reason=cmp.reason,
        on=gate.on,
        **extra,
    )


def _percentile_row(gate: Gate, evidence: RouterEvidence, stats: GateStatistics) -> GateResult:
    est = evidence.estimates[gate.metric]
    base = {
        "name": gate.name,
        "metric": gate.metric,
        "kind": gate.kind,
        "value": est.value,
        "threshold": _rule(gate),
        "ci_low": est.low,
        "ci_high": est.high,
        "n": evidence.n,
        "clusters": evidence.clusters,
        "confidence": stats.confidence,
        "method": f"percentile bootstrap, {evidence.resamples} resamples"
        + (" over clusters" if evidence.clusters != evidence.n else ""),
        "on": gate.on,
    }
    if est.value is None:
        reason = (
            "undefined: the strong route is not better than the cheap one here, so there is no gap to recover"
        )
        return GateResult(**base, verdict="fail", evidence=reason, reason=reason)
    limit = gate.min if gate.min is not None else gate.max
    assert limit is not None
    ok = (lambda x: x >= limit) if gate.min is not None else (lambda x: x <= limit)
    if gate.on == "value":
        verdict: Verdict = "pass" if ok(est.value) else "fail"
        reason = f"{est.value:.4f} {'meets' if verdict == 'pass' else 'misses'} {_rule(gate)}"
        return GateResult(**base, verdict=verdict, evidence=reason, reason=reason)
    if est.low is None or est.high is None:
        reason = "no interval: every resample was undefined"
        return GateResult(**base, verdict="inconclusive", evidence=reason, reason=reason)
    bound, other = (est.low, est.high) if gate.on == "lower_bound" else (est.high, est.low)
    if ok(bound):
        verdict, reason = "pass", f"the {stats.confidence:.0%} bound {bound:.4f} meets {_rule(gate)}"
    elif not ok(other):
        verdict, reason = "fail", f"even the opposite bound {other:.4f} misses {limit:g}"
    else:
        verdict = "inconclusive"
        reason = (
            f"the bound {bound:.4f} misses {limit:g} but the interval still reaches it: more items would tell"
        )
    return GateResult(**base, bound=bound, verdict=verdict, evidence=reason, reason=reason)


def judge_router(
    gates: list[Gate], items: RouteItems, threshold: float, evidence: RouterEvidence, stats: GateStatistics
) -> GateReport:
    """Every router gate's verdict and evidence, in the spec's order."""
    diffs = paired_differences(items, threshold)
    clusters = items.clusters
    common = {
        "confidence": stats.confidence,
        "resamples": stats.resamples,
        "seed": stats.seed,
        "power": stats.power,
        "clusters": clusters,
    }
    results: list[GateResult] = []
    for gate in gates:
        if gate.metric not in ROUTER_METRICS:
            raise ValueError(f"'{gate.metric}' is not a router metric")
        if gate.max_regression is not None:
            cmp = st.paired_comparison(diffs["router.vs_strong"], margin=gate.max_regression, **common)
            strong = evidence.value(f"routes.{evidence.strong}.quality")
            results.append(
                _comparison_row(
                    gate,
                    cmp,
                    float(evidence.value("router.quality")),
                    0.0,
                    champion_value=strong,
                    delta=cmp.delta,
                )
            )
        elif gate.metric in PAIRED_ROUTER_METRICS and gate.on != "value":
            limit = gate.min if gate.min is not None else gate.max
            assert limit is not None
            direction = "higher" if gate.min is not None else "lower"
            cmp = st.paired_comparison(diffs[gate.metric] - limit, margin=0.0, direction=direction, **common)
            side = "lower" if direction == "higher" else "upper"
            reason = {
                "pass": f"the {cmp.confidence:.0%} {side} bound {cmp.bound + limit:+.4f} clears {limit:g}",
                "fail": f"even the opposite bound misses {limit:g}: the router is shown to fall short",
                "inconclusive": f"the {side} bound {cmp.bound + limit:+.4f} misses {limit:g}, but the "
                "interval still reaches it: more items would tell",
            }[cmp.verdict]
            cmp = replace(cmp, reason=reason)
            results.append(
                _comparison_row(gate, cmp, float(diffs[gate.metric].mean()), limit, delta=cmp.delta + limit)
            )
        else:
            results.append(_percentile_row(gate, evidence, stats))
    return GateReport(
        results=results,
        champion_version=None,
        statistics={
            "confidence": stats.confidence,
            "resamples": stats.resamples,
            "seed": stats.seed,
            "power": stats.power,
            "correction": "none: every gate must pass, an intersection-union test",
            "family_size": len(results),
        },
    )
