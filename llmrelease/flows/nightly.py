"""The nightly flow: re-check every app's champion for drift, move nothing.

For each app: load its specs and current evalsets, re-evaluate the champion exactly as it was
released, compare with its release run, record one MLflow run and tag the champion version; and
when the app has a router champion, replay recent traffic through it and flag it when the share it
escalates has left its band (tagged on the router's version).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect.utilities.annotations import quote

from llmrelease.errors import InputError, LLMReleaseError
from llmrelease.mlflow_registry import MlflowRegistry
from llmrelease.project import list_apps
from llmrelease.store import redact_uri, resolve_store
from llmrelease.tasks.prefect_tasks import (
    check_champion_task,
    load_app_task,
    load_evalsets_task,
    log_drift_task,
)
from llmrelease.tasks.promotion import nightly as steps
from llmrelease.tasks.routing.tasks import check_router_task

__all__ = ["nightly", "nightly_flow"]


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run logger inside a flow; a plain logger when ``nightly`` is called directly (tests, CLI)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("llmrelease.nightly")


def nightly(
    project: Path,
    apps: list[str] | None = None,
    tolerance: float = 0.02,
    *,
    tracking_uri: str | None = None,
    artifact_root: str | None = None,
) -> dict[str, Any]:
    """Check every app (or ``apps``); one app's bad input is recorded as an error and the others are
    still checked. Raises :class:`NightlyFailed` (carrying the full result) at the end if any app
    could not be checked, so a scheduled run shows as failed."""
    if tolerance < 0:
        raise InputError(f"tolerance must be >= 0, got {tolerance}", fix="e.g. 0.02 (two points of accuracy)")
    project = project.resolve()
    names = apps if apps is not None else list_apps(project)
    store = resolve_store(project, tracking_uri)
    registry = MlflowRegistry(store.tracking_uri, artifact_root=artifact_root or store.artifact_root)
    results: dict[str, dict[str, Any]] = {}
    for app in names:
        try:
            spec = load_app_task(project, app, None, None, None)[0]
            evalsets = quote(load_evalsets_task(spec))
            report = check_champion_task(registry, spec, evalsets, tolerance)
            if report is None:
                results[app] = {"status": "no_champion"}
            else:
                run_id = log_drift_task(registry, spec, quote(report))
                results[app] = {**report.to_dict(), "nightly_run_id": run_id}
            # The router champion, if any: still escalating the share it was released for?
            router = check_router_task(registry, project, app)
            if router is not None:
                results[app]["router"] = router
                if router["status"] == "drift":
                    results[app]["status"] = "drift"
        except LLMReleaseError as exc:
            _logger().error("%s: not checked: %s", app, exc)
            results[app] = {"status": "error", "error": str(exc)}
    result = {
        "apps": results,
        "drift": sorted(a for a, r in results.items() if r["status"] == "drift"),
        "errors": sorted(a for a, r in results.items() if r["status"] == "error"),
        "tracking_uri": redact_uri(registry.tracking_uri),
    }
    if result["errors"]:
        raise steps.NightlyFailed(
            f"nightly: {len(result['errors'])} app(s) could not be checked: "
            + "; ".join(f"{a}: {results[a]['error']}" for a in result["errors"]),
            result,
        )
    return result


@flow(name="nightly", validate_parameters=True)
def nightly_flow(
    project_dir: str = ".",
    apps: list[str] | None = None,
    tolerance: float = 0.02,
    tracking_uri: str | None = None,
    artifact_root: str | None = None,
) -> dict[str, Any]:
    """Re-evaluate each app's champion on its current evalsets and compare with its release run;
    logs a run per app and tags the champion version with the verdict. Moves no alias."""
    return nightly(
        Path(project_dir),
        apps,
        tolerance,
        tracking_uri=tracking_uri,
        artifact_root=artifact_root,
    )
