"""The nightly check of the router champion: is it still escalating the share it was released for?

It replays the app's recent traffic (shadow.yaml's sample) through the router champion at the
champion's threshold (a cascade's cheap route, or a classifier policy's classifier as the release
trained it, read back from the release run), compares the share sent to the strong route with the
target the router was released for (``target ± band``), and records the result and the re-fitted
threshold on the version. It moves
nothing and changes no threshold: a threshold the gates never judged is a proposal, which the next
``llmrelease route`` (on fresh evalsets, with its gates) turns into a release.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from llmrelease.mlflow_registry import CHAMPION, TAG, MlflowRegistry, router_name, utc_now
from llmrelease.router_app import has_router, load_router
from llmrelease.specs import ClassifierPolicy
from llmrelease.tasks.routing.classifier import CLASSIFIER_FILE
from llmrelease.tasks.routing.classifier import load as load_classifier
from llmrelease.tasks.routing.promotion import router_key
from llmrelease.tasks.routing.traffic import route_traffic
from llmrelease.tasks.shadow.traffic import read_traffic

__all__ = ["check_router"]


def check_router(registry: MlflowRegistry, project: Path, app: str) -> dict[str, Any] | None:
    """None when the app has no router champion; else ``status`` (``ok``, ``drift``: the share left
    its band, ``unknown``: nothing to calibrate on) with the numbers and a sentence."""
    if not has_router(project, app):
        return None
    name = router_name(app)
    champion = registry.alias(name, CHAMPION)
    if champion is None:
        return None
    out: dict[str, Any] = {"router_model": name, "version": champion.version}
    router = load_router(project, app)
    if champion.tags.get(TAG + "candidate_key") != router_key(router):
        why = (
            "router.yaml no longer describes the router champion; release it (llmrelease route) to calibrate"
        )
        return {**out, "status": "unknown", "text": why}
    threshold = float(champion.tags[TAG + "router.threshold"])
    target = float(champion.tags[TAG + "router.target_share"])
    spec = router.cheap.app
    if spec.shadow is None:
        return {**out, "status": "unknown", "text": "no traffic log (shadow.yaml) to calibrate on"}
    sample = read_traffic(spec.shadow.traffic, app, project_root=spec.root, variables=spec.prompt.variables)
    classifier = None
    if isinstance(router.spec.policy, ClassifierPolicy):  # the version's own, trained at release
        with tempfile.TemporaryDirectory(prefix="llmrelease-router-") as tmp:
            path = registry.download_artifact(champion.tags[TAG + "eval_run_id"], CLASSIFIER_FILE, Path(tmp))
            classifier = load_classifier(path)
    routing = route_traffic(router, sample, threshold, target=target, classifier=classifier)
    if routing is None:
        return {**out, "status": "unknown", "text": "no recent request carries template variables"}
    cal = routing.calibration
    record = {
        "at": utc_now(),
        "requests": cal.requests,
        "share": round(cal.share, 6),
        "target": cal.target,
        "band": cal.band,
        "within_band": cal.within_band,
        "threshold": cal.threshold,
        "refit_threshold": cal.refit_threshold,
        "refit_share": round(cal.refit_share, 6),
        "cost_per_1k_requests": routing.cost_per_1k_requests,
    }
    registry.set_version_tags(
        name,
        champion.version,
        {
            TAG + "router.calibration": json.dumps(record, sort_keys=True),
            TAG + "router.drift": str(not cal.within_band).lower(),
        },
    )
    return {
        **out,
        **record,
        "status": "ok" if cal.within_band else "drift",
        "text": f"router {cal.describe()}",
    }
