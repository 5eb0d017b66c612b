"""Evaluate a router: every route answers every evalset item, then the policy is applied per item.

Both routes are evaluated exactly as a candidate is (``tasks.evaluation.evaluate``: chunked,
checkpointed, on the process's cached engine), so a route that is also the app's champion or a past
candidate costs nothing new when its generations are kept. The cascade is then pure arithmetic on
the two evaluations: per item, the cheap answer stands unless its confidence is below the threshold
(or it failed the response schema), in which case the strong answer stands and both calls are paid.
A classifier policy picks the answer from the request's text instead (out-of-fold on the quality
evalset, see :mod:`.classifier`), and each item pays for the one answer it serves. That gives the
router's own per-item scores on every metric of every evalset (``routed``), which are what a
candidate's are, and the router numbers with intervals on the quality score.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from llmrelease.errors import InputError
from llmrelease.router_app import RouterApp
from llmrelease.specs import ClassifierPolicy
from llmrelease.tasks.evaluation.evalsets import Evalset
from llmrelease.tasks.evaluation.items import ScoreColumn, Scores
from llmrelease.tasks.evaluation.step import Evaluation
from llmrelease.tasks.gates.decisions import GateReport
from llmrelease.tasks.routing.cascade import RouteItems, escalates, fit_threshold
from llmrelease.tasks.routing.classifier import RequestClassifier, cheap_enough, cross_fit, fit, request_text
from llmrelease.tasks.routing.evidence import RouterEvidence, router_evidence
from llmrelease.tasks.routing.gates import judge_router
from llmrelease.tasks.routing.traffic import TrafficRouting

__all__ = ["RouterEvaluation", "route_items", "routed_scores", "confidences", "judge", "evalset_requests"]


@dataclass
class RouterEvaluation:
    router: RouterApp
    evaluations: dict[str, Evaluation]
    """Each route's own evaluation, by route name."""
    items: RouteItems
    """Both routes on the quality evalset's items."""
    threshold: float
    threshold_source: str
    """``spec`` or ``fitted to target_strong_share=<x>``."""
    evidence: RouterEvidence
    report: GateReport
    routed: Scores
    """The router's own per-item scores: for each evalset item, the score of the answer it serves."""
    escalated: dict[str, np.ndarray] = field(default_factory=dict)
    """Per evalset, in its row order: which items the cascade escalated."""
    traffic: TrafficRouting | None = None
    """The router on the app's replayed traffic (shadow.yaml's sample), when it has one."""
    classifier: RequestClassifier | None = None
    """A classifier policy's classifier, trained on every item of the quality evalset (the one the
    version serves; the evaluation's confidences are out-of-fold)."""

    @property
    def target_share(self) -> float:
        """The share the router is meant to escalate: the policy's target, else the evalset's share
        at the spec's threshold."""
        target = self.router.spec.policy.target_strong_share
        return target if target is not None else float(self.evidence.value("router.strong_share") or 0.0)

    @property
    def metrics(self) -> dict[str, float]:
        """For MLflow: every router number with its interval ends, the routed aggregates under the
        app's metric names, each route's aggregates under ``routes.<name>.``, and the threshold."""
        out: dict[str, float] = {"router.threshold": self.threshold}
        for name, est in self.evidence.estimates.items():
            if est.value is not None:
                out[name] = est.value
            if est.low is not None and est.high is not None:
                out[f"{name}.ci_low"], out[f"{name}.ci_high"] = est.low, est.high
        for ev, esc in self.escalated.items():
            out[f"router.{ev}.strong_share"] = float(esc.mean()) if esc.size else 0.0
        out.update(self.routed.aggregates)
        if self.traffic is not None:
            out.update(self.traffic.metrics())
        for route, evaluation in self.evaluations.items():
            for name, value in evaluation.metrics.items():
                if np.isfinite(value):
                    out[f"routes.{route}.{name}"] = float(value)
        return out


def _column(evaluation: Evaluation, name: str, route: str) -> ScoreColumn:
    column = evaluation.item_serving.get(name)
    if column is None:
        column = evaluation.scores.items.get(name)
    if column is None:
        raise InputError(f"route '{route}' produced no '{name}' per item")
    return column


def confidences(router: RouterApp, cheap: Evaluation, evalset: str) -> ScoreColumn:
    """The cheap route's confidence per item of ``evalset``, -inf where the policy forces escalation."""
    policy = router.spec.policy
    assert not isinstance(policy, ClassifierPolicy), "a classifier's confidence is not the answer's"
    column = _column(cheap, f"{evalset}.{policy.confidence}", router.cheap.name)
    values = column.values.copy()
    if np.isnan(values).any():
        raise InputError(
            f"route '{router.cheap.name}': its backend ({router.cheap.app.model.engine.backend}) returned no "
            f"token log-probabilities for {int(np.isnan(values).sum())} answers of '{evalset}'",
            fix="a cascade needs them: use the vllm (or ray) backend for the cheap route",
        )
    schema = f"{evalset}.schema_conforms"
    if "schema_failure" in policy.escalate_on and schema in cheap.scores.items:
        values[cheap.scores.items[schema].values < 1] = -np.inf
    return ScoreColumn(column.item_ids, values)


def evalset_requests(evalsets: Iterable[Evalset]) -> dict[str, dict[str, str]]:
    """Per evalset, item id -> the request's text (:func:`.classifier.request_text`): what a
    classifier policy routes on."""
    return {
        ev.name: {row.id: request_text(row.vars) for chunk in ev.batches() for row in chunk}
        for ev in evalsets
    }


def route_items(
    router: RouterApp,
    cheap: Evaluation,
    strong: Evaluation,
    clusters: dict[str, str] | None,
) -> RouteItems:
    """Both routes on the quality evalset's items, aligned in the cheap route's row order. Under a
    classifier policy the confidence is not the cheap answer's: it is left at 0 for :func:`_classify`
    to fill with the out-of-fold predictions."""
    evalset, metric = router.quality_evalset, router.spec.quality
    cheap_q = _column(cheap, metric, router.cheap.name)
    ids = cheap_q.item_ids.ids

    def strong_aligned(name: str) -> np.ndarray:
        column = _column(strong, name, router.strong.name)
        return np.fromiter((column[i] for i in ids), dtype=float, count=len(ids))

    return RouteItems(
        ids=list(ids),
        cheap_quality=cheap_q.values,
        strong_quality=strong_aligned(metric),
        cheap_cost=_column(cheap, f"{evalset}.cost", router.cheap.name).values,
        strong_cost=strong_aligned(f"{evalset}.cost"),
        confidence=np.zeros(len(ids))
        if isinstance(router.spec.policy, ClassifierPolicy)
        else confidences(router, cheap, evalset).values,
        clusters=None if clusters is None else np.array([clusters.get(i, "") for i in ids]),
    )


def routed_scores(cheap: Evaluation, strong: Evaluation, escalate: dict[str, np.ndarray]) -> Scores:
    """Per metric, the score of the answer the router serves: the strong route's where the item was
    escalated, the cheap route's elsewhere (both over the cheap route's ids)."""
    out = Scores()
    for name, column in cheap.scores.items.items():
        evalset = name.split(".", 1)[0]
        esc = escalate.get(evalset)
        other = strong.scores.items.get(name)
        if esc is None or other is None:
            continue
        strong_values = np.fromiter((other[i] for i in column.item_ids.ids), dtype=float, count=len(column))
        routed = ScoreColumn(column.item_ids, np.where(esc, strong_values, column.values))
        out.items[name] = routed
        out.aggregates[name] = routed.mean()
    return out


def _classify(
    router: RouterApp,
    cheap: Evaluation,
    strong: Evaluation,
    clusters: dict[str, str] | None,
    requests: dict[str, dict[str, str]],
) -> tuple[RouteItems, RequestClassifier, dict[str, np.ndarray]]:
    """A classifier policy on the routes' evaluations: the items with out-of-fold confidences (the
    router is judged on them), the classifier trained on every item, and every evalset's
    confidences (the quality evalset's out-of-fold, the others' from the trained classifier)."""
    policy = router.spec.policy
    assert isinstance(policy, ClassifierPolicy)
    evalset = router.quality_evalset
    items = route_items(router, cheap, strong, clusters)
    texts = [requests[evalset][i] for i in items.ids]
    labels = cheap_enough(items.cheap_quality, items.strong_quality)
    try:
        out_of_fold = cross_fit(policy, texts, labels, items.clusters)
    except ValueError as exc:
        raise InputError(
            f"router '{router.spec.version}': {exc}", fix="add items to the quality evalset"
        ) from None
    items = replace(items, confidence=out_of_fold, pays_both=False)
    classifier = fit(policy, texts, labels)
    by_evalset: dict[str, np.ndarray] = {}
    for name, ids in cheap.item_ids.items():
        if name == evalset:
            by_id = dict(zip(items.ids, out_of_fold, strict=True))
            by_evalset[name] = np.array([by_id[i] for i in ids.ids], dtype=float)
        elif len(ids):
            by_evalset[name] = classifier.confidence([requests[name][i] for i in ids.ids])
    return items, classifier, by_evalset


def judge(
    router: RouterApp,
    evaluations: dict[str, Evaluation],
    clusters: dict[str, str] | None,
    requests: dict[str, dict[str, str]] | None = None,
) -> RouterEvaluation:
    """The policy applied to the routes' evaluations: threshold, router numbers, gates, routed scores.
    ``requests`` (:func:`evalset_requests`) is what a classifier policy routes on."""
    cheap, strong = evaluations[router.cheap.name], evaluations[router.strong.name]
    policy = router.spec.policy
    classifier: RequestClassifier | None = None
    if isinstance(policy, ClassifierPolicy):
        if requests is None:
            raise ValueError("a classifier policy routes on the requests' text: pass requests")
        items, classifier, by_evalset = _classify(router, cheap, strong, clusters, requests)
    else:
        items = route_items(router, cheap, strong, clusters)
        by_evalset = {
            name: confidences(router, cheap, name).values
            for name, ids in cheap.item_ids.items()
            if f"{name}.{policy.confidence}" in cheap.item_serving and len(ids)
        }
    if policy.threshold is not None:
        threshold, source = policy.threshold, "spec"
    else:
        assert policy.target_strong_share is not None
        threshold = fit_threshold(items.confidence, policy.target_strong_share)
        source = f"fitted to target_strong_share={policy.target_strong_share:g}"
    stats = router.statistics
    evidence = router_evidence(
        items,
        threshold,
        cheap=router.cheap.name,
        strong=router.strong.name,
        level=2 * stats.confidence - 1,
        resamples=stats.resamples,
        seed=stats.seed,
    )
    report = judge_router(router.spec.gates, items, threshold, evidence, stats)
    escalate = {name: escalates(conf, threshold) for name, conf in by_evalset.items()}
    routed = routed_scores(cheap, strong, escalate)
    return RouterEvaluation(
        router,
        evaluations,
        items,
        threshold,
        source,
        evidence,
        report,
        routed,
        escalate,
        classifier=classifier,
    )
