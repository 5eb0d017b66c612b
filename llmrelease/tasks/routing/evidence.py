"""The router's numbers with bootstrap intervals: every route alone, the cascade, the random router at
equal cost, APGR and CPT(50)/CPT(80). Pure numpy.

One bootstrap serves every number: items (or whole clusters, when the evalset card names a cluster
key) are resampled with replacement, and each resample's counts are the weights ``.cascade`` computes
with, so the route, router and baseline numbers of one resample are on the same items (paired). The
threshold is held fixed: it was set before the items were seen (the spec's, or fitted to a target
escalation share from the confidences alone, which do not use the labels), so the intervals are those
of a fixed router. Intervals are percentile intervals of the resampled values at ``level`` (two-sided).

A number that is undefined on the observed items (PGR, APGR and CPT when the strong route is not
better than the cheap one) is None; a resample without a gap is left out of its interval, and
``undefined_resamples`` says how many were.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmrelease.tasks.routing.cascade import Curve, RouteItems, apgr, cpt, escalated, operating_point, sweep

__all__ = ["Estimate", "RouterEvidence", "router_evidence", "resample_weights"]

_CELLS = 4_000_000
"""Weights held at once (resamples x items); bigger runs go in batches."""


@dataclass(frozen=True)
class Estimate:
    value: float | None
    """On the observed items; None when undefined there."""
    low: float | None = None
    high: float | None = None
    """The two-sided percentile interval at the evidence's ``level``; None when not estimable."""
    undefined_resamples: int = 0


@dataclass(frozen=True)
class RouterEvidence:
    n: int
    clusters: int
    threshold: float
    cheap: str
    strong: str
    level: float
    resamples: int
    seed: int
    estimates: dict[str, Estimate]
    """Keyed by the names in :data:`NAMES`, with ``cheap``/``strong`` replaced by the route names."""
    curve: Curve = field(repr=False)
    """The observed sweep (one row)."""
    pays_both: bool = True
    """The items' cost model (:attr:`.cascade.RouteItems.pays_both`)."""

    def value(self, name: str) -> float | None:
        return self.estimates[name].value


def resample_weights(
    n: int, clusters: np.ndarray | None, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap counts per item, one row per resample: items drawn n times with replacement, or whole
    clusters drawn as many times as there are clusters (every item weighs its cluster's count)."""
    if clusters is None:
        return rng.multinomial(n, np.full(n, 1 / n), size=resamples).astype(float)
    _, index = np.unique(np.asarray(clusters), return_inverse=True)
    g = int(index.max()) + 1
    counts = rng.multinomial(g, np.full(g, 1 / g), size=resamples).astype(float)
    return counts[:, index.reshape(-1)]


def _stats(items: RouteItems, escalate: np.ndarray, weights: np.ndarray | None) -> dict[str, np.ndarray]:
    """Every number, one value per weight row, keyed by generic name."""
    op = operating_point(items, escalate, weights)
    curve = sweep(items, weights)
    return {
        "router.quality": op.quality,
        "router.cost_per_1k_requests": op.cost * 1000,
        "router.strong_share": op.strong_share,
        "router.pgr": op.pgr,
        "router.apgr": apgr(curve),
        "router.cpt50": cpt(curve, 0.5),
        "router.cpt80": cpt(curve, 0.8),
        "router.vs_strong": op.quality - op.strong_quality,
        "router.cost_ratio": np.divide(
            op.cost, op.strong_cost, out=np.full_like(op.cost, np.nan), where=op.strong_cost > 0
        ),
        "random.quality": op.random_quality,
        "random.strong_share": op.random_share,
        "router.vs_random": op.quality - op.random_quality,
        "cheap.quality": op.cheap_quality,
        "cheap.cost_per_1k_requests": op.cheap_cost * 1000,
        "strong.quality": op.strong_quality,
        "strong.cost_per_1k_requests": op.strong_cost * 1000,
    }


NAMES = tuple(
    _stats(
        RouteItems(["a"], *(np.zeros(1) for _ in range(5))),
        np.zeros(1, dtype=bool),
        None,
    )
)
"""Every number's generic name (``cheap.``/``strong.`` become the routes' names)."""


def _public_name(name: str, cheap: str, strong: str) -> str:
    head, _, tail = name.partition(".")
    return f"routes.{cheap if head == 'cheap' else strong}.{tail}" if head in {"cheap", "strong"} else name


def router_evidence(
    items: RouteItems,
    threshold: float,
    *,
    cheap: str = "cheap",
    strong: str = "strong",
    level: float = 0.9,
    resamples: int = 2000,
    seed: int = 0,
) -> RouterEvidence:
    """The cascade at ``threshold`` on ``items``, every number with its bootstrap interval."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100, got {resamples!r}")
    escalate = escalated(items, threshold)
    observed = {k: float(v[0]) for k, v in _stats(items, escalate, None).items()}
    rng = np.random.default_rng(seed)
    batch = max(1, min(resamples, _CELLS // len(items)))
    draws: dict[str, list[np.ndarray]] = {k: [] for k in observed}
    for start in range(0, resamples, batch):
        weights = resample_weights(len(items), items.clusters, min(batch, resamples - start), rng)
        for k, v in _stats(items, escalate, weights).items():
            draws[k].append(v)
    a = (1 - level) / 2
    estimates: dict[str, Estimate] = {}
    for k, value in observed.items():
        values = np.concatenate(draws[k])
        finite = values[np.isfinite(values)]
        low = high = None
        if len(finite):
            low, high = (float(q) for q in np.quantile(finite, [a, 1 - a]))
        name = _public_name(k, cheap, strong)
        estimates[name] = Estimate(
            value=value if np.isfinite(value) else None,
            low=low,
            high=high,
            undefined_resamples=int(values.size - finite.size),
        )
    n_clusters = len(items) if items.clusters is None else len(np.unique(np.asarray(items.clusters)))
    return RouterEvidence(
        n=len(items),
        clusters=n_clusters,
        threshold=float(threshold),
        cheap=cheap,
        strong=strong,
        level=level,
        resamples=resamples,
        seed=seed,
        estimates=estimates,
        curve=sweep(items),
        pays_both=items.pays_both,
    )
