"""Gate decisions: absolute thresholds, and non-inferiority against the champion on the same items.

Pure logic; no server. The statistics live in :mod:`.statistics`; this module applies a policy:
which test each gate gets, the Holm family of the comparison gates, and the three verdicts.

- A comparison gate (``max_regression``) judges a one-sided bound of (candidate - champion), by item
  or by cluster when the evalset's card names one, seeded so the same inputs give the same verdict.
  For 0/1 scores on independent items an exact/score paired test (McNemar; Tango for a margin) must
  agree with the bootstrap: the larger p-value decides, so a small evalset with few discordant
  pairs (where a bootstrap is too narrow) gets the exact answer.
- Together the comparison gates are one family: Holm's step-down keeps the chance that *any* of their
  rows wrongly says "no worse than the champion" at ``1 - confidence``; the table shows raw and
  adjusted bounds.
- A miss is FAIL when the evalset could have shown non-inferiority (MDE <= margin) or shows the
  regression outright, else INCONCLUSIVE with the number of items that would decide it.
- An absolute gate compares its threshold with the point estimate, or with a one-sided bound
  (``on: lower_bound``): Wilson/exact for rates, the bootstrap for means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from llmrelease.catalogue import MetricCatalogue, MetricDef
from llmrelease.specs import Gate, GatePolicy, GateStatistics
from llmrelease.tasks.evaluation.items import paired
from llmrelease.tasks.gates import statistics as st
from llmrelease.tasks.gates.sequential import SequentialMonitor, WatchedGate

__all__ = ["GateResult", "GateReport", "Verdict", "evaluate_gates"]

Verdict = Literal["pass", "fail", "inconclusive", "skipped"]
Decision = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class GateResult:
    name: str
    metric: str
    kind: str
    value: float | None
    """The candidate's aggregate (mean of per-item scores)."""
    threshold: str
    """The rule as written, e.g. '>= 0.40', '>= 0.40 (lower bound)' or 'drop <= 0.05 vs champion'."""
    verdict: Verdict
    evidence: str
    champion_value: float | None = None
    delta: float | None = None
    """Candidate minus champion, mean over the paired items."""
    ci_low: float | None = None
    ci_high: float | None = None
    """Two-sided interval at ``2 * confidence - 1`` (90% for 0.95): its deciding end is ``bound``."""
    n: int | None = None
    bound: float | None = None
    """The one-sided bound that decides, before any multiplicity correction: of the delta
    (comparison) or of the value (absolute gate ``on`` a bound)."""
    bound_adjusted: float | None = None
    """The same bound at the Holm-adjusted level (comparison gates; equal to ``bound`` when alone)."""
    confidence: float | None = None
    """One-sided confidence of ``bound``."""
    confidence_adjusted: float | None = None
    p_value: float | None = None
    """One-sided p of H0 'worse than the margin allows' (the larger of bootstrap and exact test)."""
    p_adjusted: float | None = None
    """Holm-adjusted p; the gate passes the family when it is <= 1 - confidence."""
    p_exact: float | None = None
    exact_test: str | None = None
    clusters: int | None = None
    """Independent units: clusters, or items when the card names no cluster key."""
    design_effect: float | None = None
    """Variance of the mean by cluster over the variance if items were independent (1 = none)."""
    effective_n: float | None = None
    sd: float | None = None
    """Standard deviation of the per-item differences (what ``llmrelease plan`` sizes evalsets with)."""
    mde: float | None = None
    """Minimum detectable effect at the policy's power for this n (None: cannot be estimated)."""
    items_needed: int | None = None
    """Items that would make an undecided gate decisive at the policy's power (about)."""
    method: str | None = None
    reason: str | None = None
    on: str = "value"


@dataclass
class GateReport:
    results: list[GateResult] = field(default_factory=list)
    champion_version: str | None = None
    statistics: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Every gate passed (or was skipped): the only state that promotes."""
        return all(r.verdict in ("pass", "skipped") for r in self.results)

    @property
    def failed(self) -> list[GateResult]:
        return [r for r in self.results if r.verdict == "fail"]

    @property
    def inconclusive(self) -> list[GateResult]:
        return [r for r in self.results if r.verdict == "inconclusive"]

    @property
    def decision(self) -> Decision:
        """FAIL if any gate failed, else INCONCLUSIVE if any could not decide, else PASS."""
        if self.failed:
            return "fail"
        return "inconclusive" if self.inconclusive else "pass"

    def to_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "decision": self.decision,
            "champion_version": self.champion_version,
            "statistics": self.statistics,
            "gates": [_json_safe(asdict(r)) for r in self.results],
        }


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    """inf/NaN are not JSON: an MDE that cannot be estimated is null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def _rule(gate: Gate, metric: MetricDef | None) -> str:
    on = f" ({gate.on.replace('_', ' ')})" if gate.on != "value" else ""
    if gate.min is not None:
        return f">= {gate.min:g}{on}"
    if gate.max is not None:
        return f"<= {gate.max:g}{on}"
    worse = "rise" if metric is not None and metric.direction == "lower" else "drop"
    return f"{worse} <= {gate.max_regression:g} vs champion"


def _fmt(x: float | None, signed: bool = True) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _binary(*arrays: np.ndarray) -> bool:
    return all(bool(np.isin(a, (0.0, 1.0)).all()) for a in arrays)


# ------------------------------------------------------------------------------- absolute gates


def _absolute(
    gate: Gate,
    metric: MetricDef,
    value: float | None,
    items: Mapping[str, float],
    clusters: Mapping[str, str] | None,
    stats: GateStatistics,
) -> tuple[Verdict, str, dict[str, Any]]:
    if value is None:
        return "fail", "metric was not computed", {}
    threshold = gate.min if gate.min is not None else gate.max
    assert threshold is not None
    if gate.on == "value":
        ok = value >= threshold if gate.min is not None else value <= threshold
        return (
            ("pass" if ok else "fail"),
            f"{value:.4f} {'meets' if ok else 'misses'} {_rule(gate, metric)}",
            {"n": len(items) or None},
        )
    if not metric.per_item or not items:
        return "fail", f"on: {gate.on} needs per-item scores, and '{gate.metric}' has none", {}
    ids = sorted(items)
    v = np.array([items[i] for i in ids], dtype=float)
    labels = [clusters.get(i, i) for i in ids] if clusters else None
    binary = _binary(v)
    method = gate.interval
    if method == "auto":
        method = "wilson" if binary and labels is None else "bootstrap"
    if method in ("wilson", "exact") and not binary:
        return (
            "fail",
            f"interval: {method} is for 0/1 rates; '{gate.metric}' has other scores (use bootstrap)",
            {},
        )
    c = stats.confidence
    if method == "bootstrap":
        lo, hi = st.mean_bounds(v, confidence=c, seed=stats.seed, resamples=stats.resamples, clusters=labels)
        described = "bootstrap" + (" by cluster" if labels else "")
    else:
        k = int(v.sum())
        lo = st.proportion_bound(k, v.size, confidence=c, side="lower", method=method)  # type: ignore[arg-type]
        hi = st.proportion_bound(k, v.size, confidence=c, side="upper", method=method)  # type: ignore[arg-type]
        described = {"wilson": "Wilson score", "exact": "Clopper-Pearson exact"}[method]
        if labels:
            described += " (ignores clusters)"
    floor = gate.min is not None
    bound, other = (lo, hi) if floor else (hi, lo)
    meets = bound >= threshold if floor else bound <= threshold
    shown_wrong = other < threshold if floor else other > threshold
    units = len(set(labels)) if labels else v.size
    needed = None
    if meets:
        verdict: Verdict = "pass"
        reason = f"the {c:.0%} {'lower' if floor else 'upper'} bound meets the threshold"
    elif shown_wrong:
        verdict, reason = (
            "fail",
            f"even the {c:.0%} {'upper' if floor else 'lower'} bound misses the threshold",
        )
    else:
        verdict = "inconclusive"
        needed = _absolute_items_needed(v, threshold, floor, c, stats.power)
        reason = "the interval straddles the threshold: the evalset is too small to tell" + (
            f"; about {needed} items would" if needed else ""
        )
    side = "lower" if floor else "upper"
    evidence = (
        f"{value:.4f} on {v.size} items; {c:.0%} {side} bound {bound:.4f} ({described}) "
        f"{'meets' if meets else 'misses'} {threshold:g}: {reason}"
    )
    extra = {
        "n": int(v.size),
        "bound": bound,
        "bound_adjusted": bound,
        "confidence": c,
        "confidence_adjusted": c,
        "ci_low": lo,
        "ci_high": hi,
        "clusters": units,
        "items_needed": needed,
        "method": described,
        "reason": reason,
    }
    return verdict, evidence, extra


def _absolute_items_needed(
    v: np.ndarray, threshold: float, floor: bool, c: float, power: float
) -> int | None:
    """Items for the bound to clear the threshold with ``power`` if the true value is the observed
    one (normal approximation, independent items); None when the observed value is on the wrong side
    of the threshold (more items would sooner show a FAIL)."""
    gap = float(v.mean()) - threshold if floor else threshold - float(v.mean())
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    if gap <= 0 or sd == 0:
        return None
    z = float(st._stats().norm.ppf(c) + st._stats().norm.ppf(power))
    return max(v.size + 1, math.ceil((z * sd / gap) ** 2))


# ------------------------------------------------------------------------------- comparison gates


@dataclass
class _Pending:
    """A comparison gate waiting for its family's correction."""

    index: int
    comparison: st.Comparison
    exact: st.BinaryPairedTest | None
    champion_value: float


def _compare(
    gate: Gate,
    metric: MetricDef,
    items: Mapping[str, float],
    champion_items: Mapping[str, float],
    clusters: Mapping[str, str] | None,
    stats: GateStatistics,
) -> tuple[Verdict, str, dict[str, Any]] | tuple[st.Comparison, st.BinaryPairedTest | None, float]:
    """The raw comparison (and the exact test for 0/1 scores), or a closed verdict when the gate
    cannot be compared at all."""
    if not metric.per_item:
        return "fail", f"'{gate.metric}' has no per-item scores: it cannot be compared item by item", {}
    cand, champ = paired(items, champion_items)
    if not cand.size:
        return "fail", "no items in common with the champion: cannot compare", {}
    labels = None
    if clusters:
        common = sorted(set(items) & set(champion_items))
        labels = [clusters.get(i, i) for i in common]
    margin = float(gate.max_regression or 0.0)
    comparison = st.paired_comparison(
        cand - champ,
        margin=margin,
        direction=metric.direction,
        clusters=labels,
        confidence=stats.confidence,
        resamples=stats.resamples,
        seed=stats.seed,
        power=stats.power,
    )
    exact = None
    if labels is None and margin < 1 and _binary(cand, champ):
        exact = st.binary_paired_test(cand, champ, margin=margin, direction=metric.direction)
        # With no discordant pair the bound of ``statistics._no_variation`` is exact (Clopper-Pearson
        # on the share of items that could differ); Tango's is a normal approximation there.
        if exact.wins + exact.losses > 0 and exact.p_value > comparison.p_value:
            comparison = replace(comparison, p_value=exact.p_value)
    return comparison, exact, float(champ.mean())


def _judge_family(
    pending: list[_Pending], stats: GateStatistics
) -> list[tuple[st.Comparison, st.Comparison, float | None]]:
    """(raw, adjusted, adjusted p) per pending gate: Holm across the family, or each alone."""
    if stats.correction == "holm" and len(pending) > 1:
        adjusted = st.holm_adjust([p.comparison for p in pending], stats.alpha)
        return [(a.raw, a.adjusted, a.p_adjusted) for a in adjusted]
    out = []
    for p in pending:
        c = p.comparison
        if c.verdict == "pass" and c.p_value > stats.alpha:  # the exact test does not confirm
            c = replace(
                c, verdict="inconclusive", reason="the bootstrap bound clears, the exact test does not"
            )
        out.append((p.comparison, c, p.comparison.p_value))
    return out


def _comparison_result(
    gate: Gate,
    metric: MetricDef,
    value: float | None,
    pending: _Pending,
    raw: st.Comparison,
    adj: st.Comparison,
    p_adjusted: float | None,
    family: int,
) -> GateResult:
    worse = "upper" if metric.direction == "lower" else "lower"
    limit = raw.margin if metric.direction == "lower" else -raw.margin
    units = (
        f", {raw.clusters} clusters, design effect {raw.design_effect:.2f}" if raw.clusters != raw.n else ""
    )
    holm = (
        f" (Holm, {family} gates: {_fmt(adj.bound)} at {adj.confidence:.2%})"
        if family > 1 and adj.confidence != raw.confidence
        else ""
    )
    exact = f"; {pending.exact.method} p {pending.exact.p_value:.3g}" if pending.exact else ""
    evidence = (
        f"paired on {raw.n} items{units}: delta {raw.delta:+.4f}, {raw.confidence:.0%} {worse} bound "
        f"{_fmt(raw.bound)}{holm} vs {limit:+.4f}; p {raw.p_value:.3g}{exact}; "
        f"MDE {_fmt(raw.mde, False)} at {raw.power:.0%} power: {adj.reason}"
    )
    return GateResult(
        gate.name,
        gate.metric,
        gate.kind,
        value,
        _rule(gate, metric),
        adj.verdict,
        evidence,
        champion_value=pending.champion_value,
        delta=raw.delta,
        ci_low=raw.ci_low,
        ci_high=raw.ci_high,
        n=raw.n,
        bound=raw.bound,
        bound_adjusted=adj.bound,
        confidence=raw.confidence,
        confidence_adjusted=adj.confidence,
        p_value=raw.p_value,
        p_adjusted=p_adjusted,
        p_exact=pending.exact.p_value if pending.exact else None,
        exact_test=pending.exact.method if pending.exact else None,
        clusters=raw.clusters,
        design_effect=raw.design_effect,
        effective_n=raw.effective_n,
        sd=raw.sd,
        mde=raw.mde,
        items_needed=adj.items_needed if adj.verdict == "inconclusive" else raw.items_needed,
        method=raw.method,
        reason=adj.reason,
    )


# ------------------------------------------------------------------------------- the policy


def _evalset_of(metric: str) -> str:
    return metric.split(".", 1)[0]


def evaluate_gates(
    policy: GatePolicy,
    aggregates: dict[str, float],
    items: Mapping[str, Mapping[str, float]],
    champion_items: Mapping[str, Mapping[str, float]] | None,
    *,
    catalogue: MetricCatalogue,
    champion_version: str | None = None,
    clusters: Mapping[str, Mapping[str, str]] | None = None,
    sequential: SequentialMonitor | None = None,
    not_run: Mapping[str, str] | None = None,
) -> GateReport:
    """Every gate's value, rule, bounds and verdict. With no champion, comparison gates are skipped.

    ``not_run`` maps a producer whose step was deliberately not run (the shadow replay of a
    candidate that had already failed a gate) to why: gates on its metrics are skipped with that
    reason instead of failing closed on the missing value. Such gates never join the Holm family,
    so every other gate's verdict is the same with or without them.

    ``clusters`` maps an evalset name to its item id -> cluster label (from the card's ``cluster``
    key); items of other evalsets are independent. ``sequential`` is the monitor that watched
    comparison gates while their evalset streamed (``statistics.sequential``): those gates are
    judged by their confidence sequences, the others by Holm on the rest of the error budget. Which
    way is worse comes from the catalogue (what the producer declared), never from the metric's
    name; a metric the catalogue does not know fails its gate. Missing data fails closed."""
    policy_stats = stats = policy.stats
    watched = sequential.sequences() if sequential is not None and champion_items is not None else {}
    if watched:
        # The watched gates spent alpha / k each; the others share what is left (see .sequential).
        stats = (
            stats.model_copy(update={"confidence": 1 - sequential.alpha_rest})
            if sequential.alpha_rest
            else stats
        )
    clusters = clusters or {}
    not_run = not_run or {}
    closed: dict[int, GateResult] = {}
    pending: list[_Pending] = []
    for i, gate in enumerate(policy.gates):
        metric = catalogue.get(gate.metric)
        value = aggregates.get(gate.metric)
        gate_items = items.get(gate.metric, {})
        labels = clusters.get(_evalset_of(gate.metric))
        verdict: tuple[Verdict, str, dict[str, Any]]
        if metric is None:
            verdict = (
                "fail",
                f"'{gate.metric}' is not in the app's metric catalogue: its meaning is unknown",
                {},
            )
        elif value is None and not gate_items and metric.producer in not_run:
            verdict = ("skipped", not_run[metric.producer], {})
        elif gate.kind == "absolute":
            if value is None and champion_items is None and metric.producer == "shadow":
                verdict = ("skipped", "no champion yet: nothing to shadow", {})
            else:
                verdict = _absolute(gate, metric, value, gate_items, labels, stats)
        elif champion_items is None:
            verdict = ("skipped", "no champion yet: first release", {})
        elif gate.name in watched:
            verdict = _watched(watched[gate.name], gate_items)
        else:
            got = _compare(gate, metric, gate_items, champion_items.get(gate.metric, {}), labels, stats)
            if isinstance(got[0], st.Comparison):
                comparison, exact, champion_value = got  # type: ignore[misc]
                pending.append(_Pending(i, comparison, exact, champion_value))
                continue
            verdict = got  # type: ignore[assignment]
        closed[i] = GateResult(
            gate.name,
            gate.metric,
            gate.kind,
            value,
            _rule(gate, metric),
            *verdict[:2],
            on=gate.on,
            **verdict[2],
        )
    judged = _judge_family(pending, stats)
    for p, (raw, adj, p_adj) in zip(pending, judged, strict=True):
        gate = policy.gates[p.index]
        metric = catalogue[gate.metric]
        closed[p.index] = _comparison_result(
            gate, metric, aggregates.get(gate.metric), p, raw, adj, p_adj, len(pending)
        )
    report = GateReport(
        results=[closed[i] for i in range(len(policy.gates))],
        champion_version=champion_version,
        statistics={
            **policy_stats.model_dump(),
            "alpha": policy_stats.alpha,
            "family_size": len(pending),
            "family_alpha": stats.alpha if pending else None,
            "watched_gates": sorted(watched),
            "clustered_evalsets": sorted(clusters),
        },
    )
    return report


def _watched(w: WatchedGate, items: Mapping[str, float]) -> tuple[Verdict, str, dict[str, Any]]:
    """A gate decided (or not) by its confidence sequence while its evalset streamed."""
    cs = w.cs
    cand, champ = paired(items, w.champion)
    delta = float((cand - champ).mean()) if cand.size else None
    higher = w.direction == "higher"
    bound = cs.lower if higher else cs.upper
    limit = -w.margin if higher else w.margin
    level = 1 - cs.alpha
    if isinstance(cs, st.GroupSequentialTest):
        spending = cs.spending.replace("_", "-").replace("obrien", "O'Brien").replace("pocock", "Pocock")
        method, what_bound = f"group-sequential, {spending} alpha spending (Lan-DeMets)", "repeated"
    else:
        method = "always-valid confidence sequence (betting, Waudby-Smith & Ramdas 2023)"
        what_bound = "always-valid"
    if w.decision == "undecided":
        verdict: Verdict = "inconclusive"
        reason = f"the looks had not cleared or crossed the margin after all {cs.n} items"
    else:
        verdict = w.decision  # type: ignore[assignment]
        what = "cleared" if w.decision == "pass" else "crossed"
        reason = f"a look {what} the margin after {w.decided_at} items; generation stopped"
    evidence = (
        f"watched while generating ({w.looks} looks, {method}): delta {_fmt(delta)}, {what_bound} "
        f"{level:.2%} {'lower' if higher else 'upper'} bound {_fmt(bound)} vs {limit:+.4f}: {reason}"
    )
    extra = {
        "champion_value": float(champ.mean()) if champ.size else None,
        "delta": delta,
        "ci_low": cs.lower,
        "ci_high": cs.upper,
        "n": cs.n,
        "bound": bound,
        "bound_adjusted": bound,
        "confidence": level,
        "confidence_adjusted": level,
        "clusters": cs.n,
        "method": method,
        "reason": reason,
    }
    return verdict, evidence, extra
