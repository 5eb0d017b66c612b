"""The router flow: register the router, evaluate both routes, apply its policy, judge its gates,
record it, and promote it only if every gate passed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.utilities.annotations import quote

from llmrelease.mlflow_registry import CHAMPION, MlflowRegistry
from llmrelease.outcome import exit_code_for
from llmrelease.specs import ClassifierPolicy
from llmrelease.store import redact_uri, resolve_store
from llmrelease.tasks.routing.step import evalset_requests, judge
from llmrelease.tasks.routing.tasks import (
    router_evaluate_task,
    router_log_task,
    router_plan_task,
    router_promote_task,
    router_register_task,
    router_traffic_task,
)

__all__ = ["route", "route_flow"]


def route(
    project: Path, app: str, *, git_commit: str | None = None, tracking_uri: str | None = None
) -> dict[str, Any]:
    # 1. Plan: router.yaml and each route as the app with its prompt and model (specs, evalsets,
    #    model sources and prompt lengths checked). Bad input stops here, before anything is registered.
    router, plans = router_plan_task(project, app, git_commit)
    store = resolve_store(router.app.root, tracking_uri)
    registry = MlflowRegistry(store.tracking_uri, artifact_root=store.artifact_root)
    # 2. Register the router (each route's prompt version, the router's version), or find it.
    candidate = router_register_task(registry, router, quote(plans))
    before = candidate.champion.version if candidate.champion else None
    summary: dict[str, Any] = {
        "app": app,
        "router_model": candidate.app,
        "version": candidate.version.version,
        "router_version": router.spec.version,
        "prompt_versions": candidate.prompt_versions,
        "champion_before": before,
        "tracking_uri": redact_uri(store.tracking_uri),
        "notes": list(candidate.notes),
    }
    if candidate.is_champion:
        note = f"router v{before} is already the champion: nothing to do"
        return {
            **summary,
            "status": "already_champion",
            "exit_code": 0,
            "champion_after": before,
            "note": note,
        }
    # 3. Every route answers every evalset item (checkpointed, on the process's engines).
    evaluations = router_evaluate_task(router, quote(plans))
    # 4. The policy per item (a cascade on the cheap answer's confidence, or a classifier on the
    #    request's text, judged out-of-fold), the router numbers with intervals, and its gates.
    quality_evalset = next(
        ev for ev in plans[router.cheap.name].evalsets if ev.name == router.quality_evalset
    )
    requests = (
        evalset_requests(plans[router.cheap.name].evalsets)
        if isinstance(router.spec.policy, ClassifierPolicy)
        else None
    )
    result = judge(router, evaluations, quality_evalset.clusters(), requests)
    # ...and on the app's replayed production traffic: the share escalated and what it costs.
    result.traffic = router_traffic_task(quote(result), quote(plans[router.cheap.name].traffic))
    # 5. Record (an MLflow run with every number and the cost-quality page; the verdict and the
    #    threshold on the version, challenger on it), then promote only if every gate passed and
    #    the router champion is still the one it was when the evaluation started.
    run_id, _ = router_log_task(registry, quote(result), quote(plans), candidate)
    status, note = router_promote_task(registry, candidate, result.report, run_id)
    after = registry.alias(candidate.app, CHAMPION)
    decision = result.report.decision
    return {
        **summary,
        "status": status,
        "exit_code": exit_code_for(status, decision),
        "champion_after": after.version if after else None,
        "note": note,
        "decision": decision,
        "threshold": result.threshold,
        "threshold_source": result.threshold_source,
        "estimates": {k: e.value for k, e in result.evidence.estimates.items()},
        "intervals": {k: [e.low, e.high] for k, e in result.evidence.estimates.items()},
        "interval_level": result.evidence.level,
        "items": result.evidence.n,
        "routes": {r.name: r.app.prompt.version for r in router.routes},
        "gates": result.report.to_dict(),
        "traffic": result.traffic.to_dict() if result.traffic is not None else None,
        "run_id": run_id,
    }


@flow(name="route", validate_parameters=True)
def route_flow(app: str, project_dir: str = ".", git_commit: str | None = None) -> dict[str, Any]:
    """Evaluate ``app``'s router (registry/<app>/router.yaml): both routes on every evalset item, the
    policy applied per item, APGR, CPT(50/80), the random router at equal cost and the best single
    route with bootstrap intervals, and the router's gates. Registers the router (``<app>.router``),
    records the run, and makes it the router champion only if every gate passed.
    The store comes from the environment (``MLFLOW_TRACKING_URI``), never from a parameter."""
    from llmrelease.gitrepo import at_commit

    project = Path(project_dir).resolve()
    store = resolve_store(project, None)
    with at_commit(project, git_commit) as root:
        return route(root, app, git_commit=git_commit, tracking_uri=store.tracking_uri)
