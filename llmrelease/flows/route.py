"""The router flow: evaluate both routes, apply the cascade, judge the router's gates, record it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.utilities.annotations import quote

from llmrelease.store import redact_uri, resolve_store
from llmrelease.tasks.routing.step import judge
from llmrelease.tasks.routing.tasks import router_evaluate_task, router_log_task, router_plan_task

__all__ = ["route", "route_flow"]


def route(
    project: Path, app: str, *, git_commit: str | None = None, tracking_uri: str | None = None
) -> dict[str, Any]:
    # 1. Plan: router.yaml and each route as the app with its prompt and model (specs, evalsets,
    #    model sources and prompt lengths checked). Bad input stops here.
    router, plans = router_plan_task(project, app, git_commit)
    # 2. Every route answers every evalset item (checkpointed, on the process's engines).
    evaluations = router_evaluate_task(router, quote(plans))
    # 3. The cascade per item, the router numbers with intervals, and the router's gates.
    quality_evalset = next(
        ev for ev in plans[router.cheap.name].evalsets if ev.name == router.quality_evalset
    )
    result = judge(router, evaluations, quality_evalset.clusters())
    # 4. Record: an MLflow run with every number, the cost-quality page and the gate table.
    store = resolve_store(router.app.root, tracking_uri)
    run_id, _ = router_log_task(store, quote(result), quote(plans))
    decision = result.report.decision
    return {
        "app": app,
        "router_version": router.spec.version,
        "decision": decision,
        "exit_code": {"pass": 0, "fail": 1, "inconclusive": 5}[decision],
        "threshold": result.threshold,
        "threshold_source": result.threshold_source,
        "estimates": {k: e.value for k, e in result.evidence.estimates.items()},
        "intervals": {k: [e.low, e.high] for k, e in result.evidence.estimates.items()},
        "interval_level": result.evidence.level,
        "items": result.evidence.n,
        "routes": {r.name: r.app.prompt.version for r in router.routes},
        "gates": result.report.to_dict(),
        "run_id": run_id,
        "tracking_uri": redact_uri(store.tracking_uri),
    }


@flow(name="route", validate_parameters=True)
def route_flow(app: str, project_dir: str = ".", git_commit: str | None = None) -> dict[str, Any]:
    """Evaluate ``app``'s router (registry/<app>/router.yaml): both routes on every evalset item, the
    cascade applied per item, APGR, CPT(50/80), the random router at equal cost and the best single
    route with bootstrap intervals, and the router's gates. Records a router run; moves no alias.
    The store comes from the environment (``MLFLOW_TRACKING_URI``), never from a parameter."""
    from llmrelease.gitrepo import at_commit

    project = Path(project_dir).resolve()
    store = resolve_store(project, None)
    with at_commit(project, git_commit) as root:
        return route(root, app, git_commit=git_commit, tracking_uri=store.tracking_uri)
