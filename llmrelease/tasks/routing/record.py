"""The router's evaluation as data and as an MLflow run: a JSON summary (numbers, intervals, the curve,
the gates), the HTML page, and every number as a metric with its interval ends."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from llmrelease.mlflow_registry import TAG, MlflowRegistry
from llmrelease.plan import ReleasePlan
from llmrelease.specs import ClassifierPolicy
from llmrelease.tasks.routing.classifier import CLASSIFIER_FILE
from llmrelease.tasks.routing.report import best_route, router_html
from llmrelease.tasks.routing.step import RouterEvaluation

__all__ = ["router_summary", "log_router", "route_descriptions", "traffic_sentence", "policy_sentence"]


def route_descriptions(result: RouterEvaluation) -> dict[str, str]:
    return {
        r.name: f"prompt {r.app.prompt.version} ({r.app.prompt_path.name}), model {r.app.model.version}"
        for r in result.router.routes
    }


def router_summary(result: RouterEvaluation, plans: dict[str, ReleasePlan]) -> dict[str, Any]:
    """Everything a person or a program needs to read the router's verdict, JSON-ready."""
    ev = result.evidence
    curve = ev.curve

    def clean(xs: Any) -> list[float | None]:
        return [None if x != x else round(float(x), 6) for x in xs]  # NaN -> null

    return {
        "app": result.router.app.name,
        "router_version": result.router.spec.version,
        "quality": result.router.spec.quality,
        "decision": result.report.decision,
        "threshold": result.threshold,
        "threshold_source": result.threshold_source,
        "items": ev.n,
        "clusters": ev.clusters,
        "interval_level": ev.level,
        "routes": {
            r.name: {
                "prompt_version": r.app.prompt.version,
                "model_version": r.app.model.version,
                "manifest_digest": plans[r.name].manifest_digest,
            }
            for r in result.router.routes
        },
        "estimates": {
            k: {"value": e.value, "low": e.low, "high": e.high, "undefined_resamples": e.undefined_resamples}
            for k, e in ev.estimates.items()
        },
        "curve": {
            "strong_share": clean(curve.strong_share[0]),
            "quality": clean(curve.quality[0]),
            "cost_per_1k_requests": clean(curve.cost[0] * 1000),
            "pgr": clean(curve.pgr[0]),
        },
        "best_route": best_route(ev),
        "policy": result.router.spec.policy.model_dump(mode="json"),
        "classifier": None
        if result.classifier is None
        else {
            "algorithm": result.classifier.algorithm,
            "trained_on": result.classifier.trained_on,
            "cheap_enough_share": result.classifier.cheap_enough_share,
            "artifact": CLASSIFIER_FILE,
        },
        "strong_share_by_evalset": {k: float(v.mean()) for k, v in result.escalated.items() if v.size},
        "gates": result.report.to_dict(),
        "traffic": result.traffic.to_dict() if result.traffic is not None else None,
    }


def policy_sentence(result: RouterEvaluation) -> str:
    """How the router decides, in one line."""
    policy = result.router.spec.policy
    if isinstance(policy, ClassifierPolicy):
        algorithm = {
            "logistic_regression": "logistic regression",
            "knn": f"{policy.neighbours}-nearest neighbours",
        }
        c = result.classifier
        trained = f", trained on {c.trained_on} items ({c.cheap_enough_share:.0%} cheap-enough)" if c else ""
        return (
            f"classifier ({algorithm[policy.algorithm]} on TF-IDF of the request{trained}); judged on "
            f"{policy.folds}-fold out-of-fold predictions; a request goes to '{result.router.strong.name}' "
            "when P(cheap is enough) < threshold"
        )
    return f"cascade on the cheap answer's {policy.confidence}; escalate when it is < threshold" + (
        " or the answer fails the response schema" if "schema_failure" in policy.escalate_on else ""
    )


def traffic_sentence(result: RouterEvaluation) -> str | None:
    t = result.traffic
    if t is None:
        return None
    skipped = f" ({t.skipped} recorded as chat messages were skipped)" if t.skipped else ""
    head = f"On replayed production traffic{skipped} the router {t.calibration.describe()}. "
    if t.cheap_cost_per_1k_requests is None:
        return head + (
            f"The router costs {t.cost_per_1k_requests:.4g} per 1,000 of them; each request was "
            "answered by the one route the classifier picked."
        )
    return head + (
        f"The cascade costs {t.cost_per_1k_requests:.4g} per 1,000 of them (the cheap route alone "
        f"{t.cheap_cost_per_1k_requests:.4g}); the strong route answered only the escalated ones."
    )


def log_router(
    registry: MlflowRegistry,
    result: RouterEvaluation,
    plans: dict[str, ReleasePlan],
    git_commit: str,
    *,
    registered_as: tuple[str, str] | None = None,
) -> tuple[str, str]:
    """A router run in the app's experiment; returns (run id, the HTML page's text).
    ``registered_as``: the router's (registered model, version), tagged on the run."""
    router = result.router
    summary = router_summary(result, plans)
    page = router_html(
        app=router.app.name,
        router_version=router.spec.version,
        quality_metric=router.spec.quality,
        threshold=result.threshold,
        threshold_source=result.threshold_source,
        evidence=result.evidence,
        report=result.report,
        routes=route_descriptions(result),
        traffic=traffic_sentence(result),
        policy=policy_sentence(result),
    )
    params = {
        "router_version": router.spec.version,
        "policy": router.spec.policy.kind,
        "confidence": getattr(router.spec.policy, "confidence", "p_cheap_enough"),
        "threshold_source": result.threshold_source,
        "quality": router.spec.quality,
        "git_commit": git_commit,
        **{f"route.{r.name}.prompt": r.app.prompt.version for r in router.routes},
        **{f"route.{r.name}.model": r.app.model.version for r in router.routes},
        **{f"route.{r.name}.manifest": plans[r.name].manifest_digest for r in router.routes},
    }
    decision = result.report.decision
    tags = {
        TAG + "kind": "router",
        TAG + "router_version": router.spec.version,
        TAG + "decision": decision,
        "mlflow.note.content": _note(result),
    }
    if registered_as is not None:
        tags[TAG + "router_model"], tags[TAG + "router_model_version"] = registered_as
    with tempfile.TemporaryDirectory(prefix="llmrelease-router-") as tmp:
        html_path = Path(tmp) / "router_report.html"
        html_path.write_text(page, encoding="utf-8")
        json_path = Path(tmp) / "router.json"
        json_path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        run_id = registry.log_snapshot_run(
            router.app.name,
            run_name=f"{router.app.name}-router-{router.spec.version}",
            tags=tags,
            params=params,
            metrics=result.metrics,
            datasets=[],
            files=[(html_path, "router"), (json_path, "router")] + _classifier_file(result, Path(tmp)),
        )
    return run_id, page


def _classifier_file(result: RouterEvaluation, tmp: Path) -> list[tuple[Path, str]]:
    """A classifier policy's trained classifier (what the version routes with, and what the nightly
    calibration loads back), as ``router/classifier.skops``."""
    if result.classifier is None:
        return []
    folder, name = CLASSIFIER_FILE.rsplit("/", 1)
    return [(result.classifier.save(tmp / name), folder)]


def _note(result: RouterEvaluation) -> str:
    ev = result.evidence
    rows = "\n".join(
        f"- {r.name}: {r.verdict.upper()} ({r.threshold}) {r.evidence}" for r in result.report.results
    )
    share = ev.value("router.strong_share") or 0.0
    return (
        f"Router {result.router.spec.version}: {result.report.decision.upper()}. "
        f"Escalates {share:.0%} of {ev.n} items at threshold {result.threshold:.4f} "
        f"({result.threshold_source}). Open router/router_report.html for the cost-quality curve.\n\n{rows}"
    )
