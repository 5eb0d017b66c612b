"""The router on replayed traffic with the zero-cost engine (answers are fixed; what is tested is who
is asked and who pays): a cascade asks the cheap route everything and the strong route what it
escalates; a classifier asks each request's one route."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmrelease.engines.instant import instant_engine
from llmrelease.router_app import load_router
from llmrelease.tasks.routing.classifier import fit, request_text
from llmrelease.tasks.routing.traffic import route_traffic
from llmrelease.tasks.shadow.traffic import read_traffic

APP = "support-triage"


class CountingFactory:
    """The instant engine, counting the requests each route's model spec is asked."""

    def __init__(self) -> None:
        self.asked: dict[str, int] = {}

    def __call__(self, model, root, path):
        engine, info = instant_engine(model, root, path)
        outer = self

        class Counting:
            def generate(self, conversations, sampling, **kw):
                key = conversations[0][-1]["content"][:40] if conversations else ""
                outer.asked[key] = outer.asked.get(key, 0) + len(conversations)
                return engine.generate(conversations, sampling, **kw)

        return Counting(), info


def sample_and_router(project: Path, policy: str | None = None):
    if policy is not None:
        path = project / "registry" / APP / "router.yaml"
        text = path.read_text()
        path.write_text(text[: text.index("policy:")] + policy + text[text.index("quality:") :])
    router = load_router(project, APP)
    spec = router.app
    sample = read_traffic(spec.shadow.traffic, APP, project_root=spec.root, variables=spec.prompt.variables)
    return router, sample


def test_a_classifier_sends_each_request_to_one_route_and_pays_for_it_once(project: Path) -> None:
    router, sample = sample_and_router(
        project, "policy:\n  kind: classifier\n  target_strong_share: 0.3\n  band: 0.1\n"
    )
    records = [r for r in sample.records if r.vars is not None]
    texts = [request_text(r.vars) for r in records]
    # a classifier that finds the cheap route enough on half of these requests (by their text)
    labels = np.arange(len(texts)) % 2 == 0
    classifier = fit(router.spec.policy, texts, labels)
    threshold = 0.5
    expected = classifier.confidence(texts) < threshold
    factory = CountingFactory()
    routing = route_traffic(
        router, sample, threshold, target=0.3, engine_factory=factory, classifier=classifier
    )
    assert routing is not None and routing.requests == len(records)
    assert sum(factory.asked.values()) == len(records)  # one call per request, no cheap call first
    assert routing.calibration.share == pytest.approx(expected.mean())
    assert routing.cheap_cost_per_1k_requests is None and routing.pays_both is False
    with pytest.raises(ValueError, match="pass it"):
        route_traffic(router, sample, threshold, target=0.3, engine_factory=factory)


def test_a_cascade_asks_the_cheap_route_everything_and_the_strong_route_what_it_escalates(
    project: Path,
) -> None:
    router, sample = sample_and_router(project)
    n = len([r for r in sample.records if r.vars is not None])
    factory = CountingFactory()
    routing = route_traffic(router, sample, -1.5, target=0.3, engine_factory=factory)
    assert routing is not None
    escalated = round(routing.calibration.share * n)
    assert sum(factory.asked.values()) == n + escalated
    assert routing.cost_per_1k_requests > routing.cheap_cost_per_1k_requests
