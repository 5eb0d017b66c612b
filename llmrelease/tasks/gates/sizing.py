"""How many evalset items each gate needs: the planner behind ``llmrelease plan``.

Comparison gates are sized for their margin; absolute gates on a bound (``on: lower_bound``) for
the champion's distance from their threshold. Gates on the point estimate have nothing to size.

Pure: numpy and :mod:`.statistics` only. Inputs are the champion's per-item scores (their variance
and, when the card names a cluster key, how they cluster) and, where the champion's own release
compared it with its predecessor, the observed spread of the paired differences.

The spread of a paired difference depends on the candidate, which does not exist yet, so the plan
says which assumption it uses:
- *observed*: the standard deviation of (champion - its predecessor) per item, from the champion's
  release run: two versions of this app, as different as releases have been;
- *no correlation*: ``sqrt(2) * sd(champion)``, a candidate as variable as the champion whose
  per-item results are unrelated to it. Real candidates agree with the champion on most items, so
  this overstates the spread: a conservative plan;
- *no variation* (every champion score equal, no observed spread, e.g. an unsafe rate of 0): the
  exact binomial rule of ``statistics._no_variation``: ``ln(alpha) / ln(1 - margin)`` items.

Each gate is planned at the level Holm's first step demands of the family (``alpha / k`` for k
comparison gates), the worst case: a plan that holds whatever the other gates do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from llmrelease.catalogue import MetricCatalogue
from llmrelease.specs import Gate, GatePolicy
from llmrelease.tasks.gates import statistics as st

__all__ = ["GateSize", "size_gates"]


@dataclass(frozen=True)
class GateSize:
    gate: str
    metric: str
    margin: float
    n_now: int
    """Items of the champion's evalset with a score for this metric."""
    clusters_now: int
    sd: float
    """Assumed standard deviation of a per-item difference (candidate - champion)."""
    sd_source: str
    design_effect: float
    confidence: float
    """One-sided level the gate is planned at (Holm's first step for the family)."""
    power: float
    mde_now: float | None
    """The smallest regression the current evalset detects with ``power`` (None: not estimable)."""
    items_needed: int | None
    """Items for an MDE at most the margin (None: a margin of 0 needs a proven improvement)."""
    enough: bool
    cost_per_item: float | None = None
    cost_needed: float | None = None
    seconds_per_item: float | None = None
    seconds_needed: float | None = None


def _design_effect(values: np.ndarray, labels: list[str] | None) -> tuple[float, int]:
    """(design effect of the mean, clusters) from the champion's scores: CR1 cluster variance over
    the naive one, as ``statistics.paired_comparison`` computes it for differences."""
    n = values.size
    if labels is None or n < 2:
        return 1.0, n
    _, index = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    g = int(index.max()) + 1
    sd = float(values.std(ddof=1))
    if g < 2 or sd == 0:
        return 1.0, g
    resid = np.bincount(index, weights=values - values.mean())
    se_cluster = math.sqrt(g / (g - 1) * float(np.sum(resid**2))) / n
    return (se_cluster / (sd / math.sqrt(n))) ** 2, g


def _champion_scores(
    gate: Gate, champion_items: Mapping[str, Mapping[str, float]], clusters: Mapping[str, Mapping[str, str]]
) -> tuple[np.ndarray, float, int]:
    """The champion's scores on the gate's metric (sorted by item id), their design effect and the
    number of independent units, by the cluster labels of the gate's evalset when it has them."""
    scores = champion_items.get(gate.metric) or {}
    ids = sorted(scores)
    values = np.array([scores[i] for i in ids], dtype=float)
    evalset_labels = clusters.get(gate.metric.split(".", 1)[0])
    labels = [evalset_labels.get(i, i) for i in ids] if evalset_labels else None
    deff, units = _design_effect(values, labels)
    return values, deff, units


def size_gates(
    policy: GatePolicy,
    catalogue: MetricCatalogue,
    champion_items: Mapping[str, Mapping[str, float]],
    *,
    clusters: Mapping[str, Mapping[str, str]] | None = None,
    observed_sd: Mapping[str, float] | None = None,
    margin: float | None = None,
    power: float | None = None,
    cost_per_item: float | None = None,
    seconds_per_item: float | None = None,
) -> list[GateSize]:
    """One plan per comparison gate (``max_regression``) of the policy, at its own margin or at
    ``margin`` when given, and at the policy's power or ``power``.

    ``observed_sd`` maps a gate name to the spread of its paired differences seen in the
    champion's release; ``cost_per_item`` and ``seconds_per_item`` (the champion's recorded
    generation cost and time per item) turn item counts into money and time."""
    stats = policy.stats
    pw = power if power is not None else stats.power
    if not 0 < pw < 1:
        raise ValueError(f"power must be in (0, 1), got {pw!r}")
    if margin is not None and not margin > 0:
        raise ValueError(f"margin must be > 0 to plan for, got {margin!r}")
    gates = [g for g in policy.gates if g.kind == "non_inferiority"]
    k = len(gates)
    level = 1 - stats.alpha / k if stats.correction == "holm" and k > 1 else stats.confidence
    clusters = clusters or {}
    observed_sd = observed_sd or {}
    out = []
    for gate in gates:
        m = float(margin if margin is not None else gate.max_regression or 0.0)
        values, deff, units = _champion_scores(gate, champion_items, clusters)
        n = values.size
        if gate.name in observed_sd and observed_sd[gate.name] > 0:
            sd, source = float(observed_sd[gate.name]), "observed: champion vs its predecessor"
        elif n > 1 and float(values.std(ddof=1)) > 0:
            sd, source = math.sqrt(2) * float(values.std(ddof=1)), "assumed: no correlation (conservative)"
        else:
            sd, source = 0.0, "no variation: exact binomial rule"
        if n < 2 and sd == 0:
            mde, needed = None, None
        elif sd == 0:  # the fixed gate's exact binomial rule for ties: its MDE and items needed
            _, _, _, mde, needed = st._no_variation(0.0, m, level, max(units, 1), n)
        else:
            mde = st._multiplier(level, pw, max(units - 1, 1)) * sd * math.sqrt(deff / max(n, 1))
            needed = None if m <= 0 else st._items_needed(sd, deff, m, max(n, 2), max(units, 1), level, pw)
        enough = mde is not None and mde <= m
        out.append(
            GateSize(
                gate=gate.name,
                metric=gate.metric,
                margin=m,
                n_now=n,
                clusters_now=units,
                sd=sd,
                sd_source=source,
                design_effect=deff,
                confidence=level,
                power=pw,
                mde_now=mde,
                items_needed=needed,
                enough=enough,
                cost_per_item=cost_per_item,
                cost_needed=None if cost_per_item is None or needed is None else cost_per_item * needed,
                seconds_per_item=seconds_per_item,
                seconds_needed=(
                    None if seconds_per_item is None or needed is None else seconds_per_item * needed
                ),
            )
        )
    for gate in policy.gates:
        metric = catalogue.get(gate.metric)
        if gate.kind != "absolute" or gate.on == "value" or metric is None or not metric.per_item:
            continue
        out.append(
            _size_bound_gate(
                gate, champion_items, clusters, stats.confidence, pw, cost_per_item, seconds_per_item
            )
        )
    return out


def _size_bound_gate(
    gate: Gate,
    champion_items: Mapping[str, Mapping[str, float]],
    clusters: Mapping[str, Mapping[str, str]],
    level: float,
    pw: float,
    cost_per_item: float | None,
    seconds_per_item: float | None,
) -> GateSize:
    """An absolute gate on a bound (``on: lower_bound``): items for the bound to clear the threshold
    with ``power`` if the candidate scores as the champion does. Its "margin" is the champion's
    distance from the threshold on the right side (0 or less: the champion itself would not clear)."""
    values, deff, units = _champion_scores(gate, champion_items, clusters)
    n = values.size
    threshold = float(gate.min if gate.min is not None else gate.max)  # type: ignore[arg-type]
    mean = float(values.mean()) if n else math.nan
    gap = mean - threshold if gate.min is not None else threshold - mean
    sd = float(values.std(ddof=1)) if n > 1 else 0.0
    z = st._multiplier(level, pw, max(units - 1, 1)) if units > 1 else math.inf
    mde = z * sd * math.sqrt(deff / n) if n > 1 and sd > 0 else None
    needed = None
    if gap > 0 and sd > 0:
        needed = max(2, math.ceil(deff * (z * sd / gap) ** 2))
    return GateSize(
        gate=gate.name,
        metric=gate.metric,
        margin=gap,
        n_now=n,
        clusters_now=units,
        sd=sd,
        sd_source=f"bound gate: the champion's value {mean:.3f} vs {threshold:g}",
        design_effect=deff,
        confidence=level,
        power=pw,
        mde_now=mde,
        items_needed=needed,
        enough=mde is not None and gap > 0 and mde <= gap,
        cost_per_item=cost_per_item,
        cost_needed=None if cost_per_item is None or needed is None else cost_per_item * needed,
        seconds_per_item=seconds_per_item,
        seconds_needed=None if seconds_per_item is None or needed is None else seconds_per_item * needed,
    )
