"""Prefect tasks of the router flow: thin wrappers with logging and progress around the steps."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from llmrelease.mlflow_registry import MlflowRegistry
from llmrelease.outcome import Status
from llmrelease.plan import ReleasePlan, build_plan
from llmrelease.router_app import RouterApp, load_router
from llmrelease.tasks.evaluation.step import Evaluation, evaluate
from llmrelease.tasks.gates.decisions import GateReport
from llmrelease.tasks.progress import progress_bar
from llmrelease.tasks.promotion.promote import promote
from llmrelease.tasks.routing.nightly import check_router
from llmrelease.tasks.routing.promotion import RouterCandidate, record_verdict, register_router
from llmrelease.tasks.routing.record import log_router
from llmrelease.tasks.routing.step import RouterEvaluation
from llmrelease.tasks.routing.traffic import TrafficRouting, route_traffic
from llmrelease.tasks.shadow.traffic import TrafficSample

__all__ = [
    "router_plan_task",
    "router_register_task",
    "router_evaluate_task",
    "router_traffic_task",
    "router_log_task",
    "router_promote_task",
    "check_router_task",
]


@task(name="router-plan", cache_policy=NO_CACHE)  # bad input must fail at once, not retry
def router_plan_task(project: Path, app: str, commit: str | None) -> tuple[RouterApp, dict[str, ReleasePlan]]:
    """router.yaml, and each route's release plan (the app with the route's prompt and model)."""
    router = load_router(project, app)
    plans = {
        r.name: build_plan(
            project, app, prompt_file=r.app.prompt_path, model_file=r.app.model_path, commit=commit,
        )
        for r in router.routes
    }  # fmt: skip
    logger = get_run_logger()
    for r in router.routes:
        logger.info(
            "route %s: prompt %s, model %s (manifest %s)",
            r.name, r.app.prompt.version, r.app.model.version, plans[r.name].manifest_digest,
        )  # fmt: skip
    return router, plans


@task(name="router-generate-and-score", cache_policy=NO_CACHE)
def router_evaluate_task(router: RouterApp, plans: dict[str, ReleasePlan]) -> dict[str, Evaluation]:
    """Each route on every evalset item, one after the other, with a progress bar per route."""
    out: dict[str, Evaluation] = {}
    for r in router.routes:
        evalsets = plans[r.name].evalsets
        total = sum(e.size for e in evalsets)
        with progress_bar(f"route {r.name}", total, preparing="loading model and vLLM engine") as advance:
            out[r.name] = evaluate(
                r.app.model,
                r.app.prompt,
                evalsets,
                project_root=r.app.root,
                model_spec_path=r.app.model_path,
                progress=advance,
            )
        get_run_logger().info(
            "route %s: %d items in %.1fs (%.0f output tokens/s)",
            r.name, total, out[r.name].serving.wall_s, out[r.name].serving.tokens_per_s,
        )  # fmt: skip
    return out


@task(name="router-register", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def router_register_task(
    registry: MlflowRegistry, router: RouterApp, plans: dict[str, ReleasePlan]
) -> RouterCandidate:
    c = register_router(registry, router, plans)
    for note in c.notes:
        get_run_logger().warning(note)
    get_run_logger().info(
        "router: %s v%s (%s), route prompts %s; router champion: %s",
        c.app, c.version.version, "new" if c.created else "existing",
        ", ".join(f"{k} v{v}" for k, v in c.prompt_versions.items()),
        f"v{c.champion.version}" if c.champion else "none",
    )  # fmt: skip
    return c


@task(name="router-on-traffic", cache_policy=NO_CACHE)
def router_traffic_task(result: RouterEvaluation, sample: TrafficSample | None) -> TrafficRouting | None:
    """The router on the app's replayed traffic sample: the share escalated (calibration against its
    target) and the cascade's cost; the strong route answers only what the cheap one escalated."""
    if sample is None or not sample.records:
        return None
    routing = route_traffic(
        result.router, sample, result.threshold, target=result.target_share, classifier=result.classifier
    )
    if routing is not None:
        get_run_logger().info(
            "router on %d traffic requests: %s", routing.requests, routing.calibration.describe()
        )
    return routing


@task(name="router-log-to-mlflow", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def router_log_task(
    registry: MlflowRegistry,
    result: RouterEvaluation,
    plans: dict[str, ReleasePlan],
    candidate: RouterCandidate,
) -> tuple[str, str]:
    """The router run, then the verdict and the fitted threshold on the version (and challenger)."""
    commit = next(iter(plans.values())).git_commit
    run_id, page = log_router(
        registry, result, plans, commit, registered_as=(candidate.app, candidate.version.version)
    )
    record_verdict(registry, candidate, result.report, run_id, result.threshold, result.target_share)
    for evaluation in result.evaluations.values():
        evaluation.discard_checkpoints()
    get_run_logger().info(
        "router %s: %s (run %s)", result.router.spec.version, result.report.decision, run_id
    )
    return run_id, page


@task(name="router-promote", cache_policy=NO_CACHE)
def router_promote_task(
    registry: MlflowRegistry, candidate: RouterCandidate, report: GateReport, run_id: str
) -> tuple[Status, str]:
    status, note = promote(registry, candidate, report, run_id)
    get_run_logger().info("router %s v%s: %s", candidate.app, candidate.version.version, note)
    return status, note


@task(name="check-router", cache_policy=NO_CACHE)
def check_router_task(registry: MlflowRegistry, project: Path, app: str) -> dict[str, Any] | None:
    """The router champion's calibration on recent traffic (None: the app has no router champion)."""
    result = check_router(registry, project, app)
    if result is not None:
        level = logging.WARNING if result["status"] != "ok" else logging.INFO
        get_run_logger().log(level, "%s v%s: %s", result["router_model"], result["version"], result["text"])
    return result
