"""A two-route cascade on fixed per-item outcomes: the operating point, the threshold sweep, APGR and CPT.

Pure numpy. Every number here is a function of per-item arrays (each route's quality score and cost
on the same items, and the cheap route's confidence) and of per-item *weights*: weights of 1 give
the observed values, and the bootstrap (``.evidence``) passes resampling counts, so the point
estimate and its intervals come from one code path.

Definitions (RouteLLM, Ong et al. 2024, "RouteLLM: Learning to Route LLMs with Preference Data",
arXiv:2406.18665, section 5.1; adapted to a cascade):

- The cascade answers with the cheap route, and escalates an item to the strong route when the cheap
  answer's confidence is below the threshold (or the answer is forced out: schema failure, guard).
  An escalated item pays for both calls: that is what a cascade costs, and it is never hidden.
  A router that decides before any call (the learned classifier, ``.classifier``: its confidence is
  P(cheap is enough) from the request's text) is the same arithmetic with ``pays_both=False``: a
  request sent to the strong route pays for that call only.
- ``strong share`` is the share of items escalated ("% calls to the strong model").
- ``PGR`` (performance gap recovered) at a threshold = (Q_router - Q_cheap) / (Q_strong - Q_cheap).
- The sweep moves the threshold through every distinct confidence: escalating the k least confident
  items, k = 0..n. Items with equal confidence cannot be split by a threshold, so only tie-group
  boundaries are points; between two points the curve is the straight line a randomised threshold
  reaches (escalate the next group with probability p), which is how shares in between are served.
- ``APGR`` is the area under PGR against the strong share on [0, 1]. A random router recovers the gap
  in proportion to its share (PGR = share), so its APGR is 0.5; below 0.5 the confidence orders items
  worse than chance.
- ``CPT(x)`` is the least strong share at which the curve reaches PGR = x (the first crossing). The
  curve always ends at PGR 1 with share 1, so CPT is at most 1.
- The *random router at equal cost* routes each item directly (no cheap call first) to the strong
  route with probability s, chosen so that its expected cost equals the cascade's. Its expected
  quality on item i is (1 - s) q_cheap_i + s q_strong_i: the baseline a router must beat, paired by
  item. Because an escalation pays twice, s is larger than the cascade's strong share (for a
  router that pays once, s is its own strong share up to per-item cost differences).

No gap (the strong route is not better than the cheap one on these items) leaves PGR, APGR and CPT
undefined: they are NaN here, and the caller reports that the router has nothing to recover.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = [
    "RouteItems",
    "Curve",
    "OperatingPoint",
    "escalated",
    "escalates",
    "fit_threshold",
    "operating_point",
    "sweep",
    "apgr",
    "cpt",
]


@dataclass(frozen=True)
class RouteItems:
    """Both routes' outcomes on the same items, aligned by position.

    ``confidence`` is the cheap route's (higher = surer; -inf where the answer is forced to escalate).
    Quality scores are in [0, 1] (higher is better); costs are per request in the pricing's currency.
    """

    ids: list[str]
    cheap_quality: np.ndarray
    strong_quality: np.ndarray
    cheap_cost: np.ndarray
    strong_cost: np.ndarray
    confidence: np.ndarray
    clusters: np.ndarray | None = None
    """One label per item (the evalset card's cluster key) when items are not independent."""
    pays_both: bool = True
    """A cascade calls the cheap route first, so an escalated item pays for both calls; a router that
    decides before any call (the classifier) pays for the strong call only."""

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in ("cheap_quality", "strong_quality", "cheap_cost", "strong_cost", "confidence"):
            values = getattr(self, name)
            if values.shape != (n,):
                raise ValueError(f"{name}: {values.shape} values for {n} items")
        for name in ("cheap_quality", "strong_quality", "cheap_cost", "strong_cost"):
            values = getattr(self, name)
            if not np.all(np.isfinite(values)):
                raise ValueError(f"{name} must be finite numbers")
            if name.endswith("cost") and np.any(values < 0):
                raise ValueError(f"{name} must be >= 0")
        if np.any(np.isnan(self.confidence)):
            raise ValueError("confidence must not be NaN (use -inf for an answer that must escalate)")
        if self.clusters is not None and len(self.clusters) != n:
            raise ValueError(f"clusters: {len(self.clusters)} labels for {n} items")
        if n == 0:
            raise ValueError("no items: a router cannot be evaluated on nothing")

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def order(self) -> np.ndarray:
        """Positions from least to most confident (stable: ties keep row order)."""
        return np.argsort(self.confidence, kind="stable")

    @cached_property
    def group_ends(self) -> np.ndarray:
        """In ``order``, the number of items escalated at each valid threshold: 0, then the end of
        every tie group of equal confidence (the last is n)."""
        sorted_conf = self.confidence[self.order]
        ends = np.flatnonzero(sorted_conf[1:] != sorted_conf[:-1]) + 1
        return np.concatenate([[0], ends, [len(self)]]).astype(np.intp)


def escalates(confidence: np.ndarray, threshold: float) -> np.ndarray:
    """The cascade's decision per answer: escalate when the cheap answer's confidence is below the
    threshold, and always when it was forced out (confidence -inf)."""
    conf = np.asarray(confidence, dtype=float)
    return (conf < threshold) | np.isneginf(conf)


def escalated(items: RouteItems, threshold: float) -> np.ndarray:
    """:func:`escalates` on the items' confidences."""
    return escalates(items.confidence, threshold)


def fit_threshold(confidence: np.ndarray, target_share: float) -> float:
    """The threshold whose share escalated on these confidences is nearest ``target_share``.

    Only the confidences are used (no labels), so fitting on the items the router is then evaluated
    on does not flatter it. Ties are kept whole (a threshold cannot split them; the nearer side of
    the tie wins, the lower share on a draw), and forced escalations (-inf) count in the share."""
    if not 0 < target_share < 1:
        raise ValueError(f"target_share must be in (0, 1), got {target_share!r}")
    conf = np.sort(np.asarray(confidence, dtype=float))
    n = conf.size
    if n == 0:
        raise ValueError("no confidences to fit a threshold on")
    forced = int(np.count_nonzero(np.isneginf(conf)))
    ends = np.concatenate([np.flatnonzero(conf[1:] != conf[:-1]) + 1, [n]])
    ends = ends[ends >= forced] if forced else np.concatenate([[0], ends])
    k = int(ends[np.argmin(np.abs(ends / n - target_share))])
    if k == n:
        return 0.0 if conf[-1] < 0 else float(np.nextafter(conf[-1], np.inf))
    return float(conf[k])


@dataclass(frozen=True)
class OperatingPoint:
    """The router at one threshold, under one set of weights (arrays: one value per weight row)."""

    quality: np.ndarray
    cost: np.ndarray
    """Mean cost per request."""
    strong_share: np.ndarray
    cheap_quality: np.ndarray
    strong_quality: np.ndarray
    cheap_cost: np.ndarray
    strong_cost: np.ndarray
    random_share: np.ndarray
    """The random router's strong share at the cascade's cost (clipped to [0, 1])."""
    random_quality: np.ndarray
    """The random router's expected quality at that share."""

    @property
    def pgr(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            gap = self.strong_quality - self.cheap_quality
            return np.where(gap > 0, (self.quality - self.cheap_quality) / np.where(gap > 0, gap, 1), np.nan)


def _weights(items: RouteItems, weights: np.ndarray | None) -> np.ndarray:
    w = np.ones((1, len(items))) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float))
    if w.shape[1] != len(items):
        raise ValueError(f"weights: {w.shape[1]} columns for {len(items)} items")
    return w


def operating_point(
    items: RouteItems, escalate: np.ndarray, weights: np.ndarray | None = None
) -> OperatingPoint:
    """The cascade's quality, cost and strong share for a fixed escalation decision per item, and
    the random router at equal cost, for each row of ``weights`` (default: every item once)."""
    w = _weights(items, weights)
    total = w.sum(axis=1)
    esc = np.asarray(escalate, dtype=bool)

    def mean(values: np.ndarray) -> np.ndarray:
        return (w @ values) / total

    routed = np.where(esc, items.strong_quality, items.cheap_quality)
    cheap_paid = np.ones(len(items)) if items.pays_both else ~esc
    cost = mean(cheap_paid * items.cheap_cost + esc * items.strong_cost)
    cheap_cost, strong_cost = mean(items.cheap_cost), mean(items.strong_cost)
    cheap_q, strong_q = mean(items.cheap_quality), mean(items.strong_quality)
    with np.errstate(divide="ignore", invalid="ignore"):
        extra = strong_cost - cheap_cost
        share = np.where(extra > 0, (cost - cheap_cost) / np.where(extra > 0, extra, 1), 1.0)
    share = np.clip(share, 0.0, 1.0)
    return OperatingPoint(
        quality=mean(routed),
        cost=cost,
        strong_share=mean(esc.astype(float)),
        cheap_quality=cheap_q,
        strong_quality=strong_q,
        cheap_cost=cheap_cost,
        strong_cost=strong_cost,
        random_share=share,
        random_quality=(1 - share) * cheap_q + share * strong_q,
    )


@dataclass(frozen=True)
class Curve:
    """The threshold sweep: one column per valid threshold (k = 0..n least confident escalated),
    one row per weight row."""

    strong_share: np.ndarray
    quality: np.ndarray
    cost: np.ndarray
    """Mean cost per request of the cascade."""
    pgr: np.ndarray
    """NaN in rows without a gap."""
    thresholds: np.ndarray
    """Per column, a threshold that escalates exactly those items: the confidence of the first item
    not escalated (so ``confidence < threshold`` escalates the ones before it); +inf for the last."""


def sweep(items: RouteItems, weights: np.ndarray | None = None) -> Curve:
    w = _weights(items, weights)
    order = items.order
    ends = items.group_ends
    ws = w[:, order]
    total = ws.sum(axis=1, keepdims=True)
    gain = items.strong_quality[order] - items.cheap_quality[order]
    zeros = np.zeros((w.shape[0], 1))
    cum_w = np.concatenate([zeros, np.cumsum(ws, axis=1)], axis=1)[:, ends]
    cum_gain = np.concatenate([zeros, np.cumsum(ws * gain, axis=1)], axis=1)[:, ends]
    extra = items.strong_cost[order] - (0 if items.pays_both else items.cheap_cost[order])
    cum_cost = np.concatenate([zeros, np.cumsum(ws * extra, axis=1)], axis=1)[:, ends]
    cheap_q = (ws @ items.cheap_quality[order])[:, None] / total
    cheap_c = (ws @ items.cheap_cost[order])[:, None] / total
    quality = cheap_q + cum_gain / total
    gap = quality[:, -1:] - cheap_q
    with np.errstate(divide="ignore", invalid="ignore"):
        pgr = np.where(gap > 0, (quality - cheap_q) / np.where(gap > 0, gap, 1), np.nan)
    sorted_conf = items.confidence[order]
    thresholds = np.array([sorted_conf[k] if k < len(items) else np.inf for k in ends])
    return Curve(
        strong_share=cum_w / total,
        quality=quality,
        cost=cheap_c + cum_cost / total,
        pgr=pgr,
        thresholds=thresholds,
    )


def apgr(curve: Curve) -> np.ndarray:
    """Area under PGR against the strong share, one per row (NaN without a gap). The shares of a
    resample that gave no weight to a tie group repeat a point; the trapezoid rule ignores it."""
    x, y = curve.strong_share, curve.pgr
    return np.sum((x[:, 1:] - x[:, :-1]) * (y[:, 1:] + y[:, :-1]) / 2, axis=1)


def cpt(curve: Curve, recovered: float) -> np.ndarray:
    """The least strong share at which PGR reaches ``recovered`` (0 < recovered <= 1), one per row:
    the first crossing, interpolated on the randomised-threshold line. NaN without a gap."""
    if not 0 < recovered <= 1:
        raise ValueError(f"recovered must be in (0, 1], got {recovered!r}")
    x, y = curve.strong_share, curve.pgr
    out = np.full(x.shape[0], np.nan)
    for r in range(x.shape[0]):
        if np.isnan(y[r, -1]):
            continue
        hit = int(np.argmax(y[r] >= recovered - 1e-12))
        if hit == 0:
            out[r] = x[r, 0]
            continue
        x0, x1, y0, y1 = x[r, hit - 1], x[r, hit], y[r, hit - 1], y[r, hit]
        out[r] = x1 if y1 == y0 else x0 + (recovered - y0) / (y1 - y0) * (x1 - x0)
    return out
