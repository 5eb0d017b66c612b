"""The router on replayed production traffic: the share it escalates and what it costs per 1,000 requests.

Traffic has no references, so no quality here: what recent requests say is how often the cheap route
is unsure (the share escalated, against the target the router was released for) and what the
cascade costs on them. Like a production cascade, the strong route answers only the requests the
cheap one escalated; under a classifier policy each request is answered by the one route it picks.
Requests recorded as template variables are rendered with each route's prompt; one recorded as
finished chat messages cannot be re-prompted and is counted as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from llmrelease.engines.backends import EngineFactory
from llmrelease.engines.base import Generation
from llmrelease.project import AppSpec
from llmrelease.router_app import RouterApp
from llmrelease.specs import ClassifierPolicy, TrafficRecord
from llmrelease.tasks.evaluation.scoring import score_chunk
from llmrelease.tasks.evaluation.serving import item_columns
from llmrelease.tasks.evaluation.step import default_engine_factory
from llmrelease.tasks.routing.calibration import Calibration, calibrate
from llmrelease.tasks.routing.cascade import escalates
from llmrelease.tasks.routing.classifier import RequestClassifier, request_text
from llmrelease.tasks.shadow.traffic import TrafficSample

__all__ = ["TrafficRouting", "route_traffic"]


@dataclass(frozen=True)
class TrafficRouting:
    requests: int
    skipped: int
    """Requests recorded as chat messages (no template variables): not routable by prompt."""
    calibration: Calibration
    cost_per_1k_requests: float
    cheap_cost_per_1k_requests: float | None
    """The cheap route alone on the same requests: known for a cascade (it answers every request
    first), None for a classifier (the cheap route never saw the requests sent to the strong one)."""

    @property
    def pays_both(self) -> bool:
        """A cascade: the cheap route answered every request, the strong one paid on top."""
        return self.cheap_cost_per_1k_requests is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what the command prints and router.json records."""
        c = self.calibration
        return {
            "requests": self.requests,
            "skipped": self.skipped,
            "strong_share": c.share,
            "target": c.target,
            "band": c.band,
            "within_band": c.within_band,
            "refit_threshold": c.refit_threshold,
            "cost_per_1k_requests": self.cost_per_1k_requests,
            "summary": c.describe(),
        }

    def metrics(self) -> dict[str, float]:
        c = self.calibration
        return {
            "router.traffic.requests": float(self.requests),
            "router.traffic.strong_share": c.share,
            "router.traffic.refit_threshold": c.refit_threshold,
            "router.traffic.cost_per_1k_requests": self.cost_per_1k_requests,
            "router.traffic.within_band": float(c.within_band),
        }


def route_traffic(
    router: RouterApp,
    sample: TrafficSample,
    threshold: float,
    *,
    target: float,
    engine_factory: EngineFactory | None = None,
    classifier: RequestClassifier | None = None,
) -> TrafficRouting | None:
    """A cascade: the cheap route on every routable request, the strong route on the ones it
    escalates. A classifier policy (``classifier`` required): each request to the route the
    classifier picks, and nothing else. None when no request carries template variables."""
    records = [r for r in sample.records if r.vars is not None]
    if not records:
        return None
    factory = engine_factory or default_engine_factory()
    policy = router.spec.policy

    def answer(route_app: AppSpec, rows: list[TrafficRecord]) -> list[Generation]:
        engine, _ = factory(route_app.model, route_app.root, route_app.model_path)
        conversations = [route_app.prompt.render(r.vars) for r in rows]
        model = route_app.model
        return engine.generate(
            conversations, model.sampling, response_schema=model.response_schema
        ).generations

    cheap_app, strong_app = router.cheap.app, router.strong.app

    def cost(route_app: AppSpec, gens: list[Generation]) -> float:
        return float(sum(item_columns(gens, route_app.model.pricing).get("cost", [])))

    n = len(records)
    if isinstance(policy, ClassifierPolicy):
        if classifier is None:
            raise ValueError("a classifier policy routes traffic with its classifier: pass it")
        conf = classifier.confidence([request_text(r.vars or {}) for r in records])
        escalate = escalates(conf, threshold)
        sent = [
            (app, [r for r, e in zip(records, escalate, strict=True) if e == to_strong])
            for app, to_strong in ((cheap_app, False), (strong_app, True))
        ]
        total = sum(cost(app, answer(app, rows)) for app, rows in sent if rows)
        return TrafficRouting(
            requests=n,
            skipped=len(sample.records) - n,
            calibration=calibrate(conf, threshold, target=target, band=policy.band),
            cost_per_1k_requests=total / n * 1000,
            cheap_cost_per_1k_requests=None,
        )
    cheap = answer(cheap_app, records)
    conf = np.asarray(item_columns(cheap, None)[policy.confidence], dtype=float)
    conf[np.isnan(conf)] = -np.inf  # no confidence: escalate, as a cascade must
    if "schema_failure" in policy.escalate_on and cheap_app.model.response_schema is not None:
        scores = score_chunk(
            [], [g.text for g in cheap], [None] * len(cheap), response_schema=cheap_app.model.response_schema
        )
        conf[np.asarray(scores["schema_conforms"]) < 1] = -np.inf
    cal = calibrate(conf, threshold, target=target, band=policy.band)
    escalate = escalates(conf, threshold)
    strong = (
        answer(strong_app, [r for r, e in zip(records, escalate, strict=True) if e]) if escalate.any() else []
    )

    cheap_cost = cost(cheap_app, cheap)
    total = cheap_cost + cost(strong_app, strong)
    return TrafficRouting(
        requests=n,
        skipped=len(sample.records) - n,
        calibration=cal,
        cost_per_1k_requests=total / n * 1000,
        cheap_cost_per_1k_requests=cheap_cost / n * 1000,
    )
