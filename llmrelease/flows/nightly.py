"""The nightly flow: re-check every app's champion for drift, move nothing.

For each app: load its specs and current evalsets, re-evaluate the champion exactly as it was
released, compare with its release run, record one MLflow run and tag the champion version.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect.utilities.annotations import quote

from llmrelease.errors import InputError, LLMReleaseError
from llmrelease.mlflow_registry import MlflowRegistry
from llmrelease.project import AppSpec, list_apps, load_app
from llmrelease.store import redact_uri, resolve_store
from llmrelease.tasks import nightly as steps
from llmrelease.tasks.evalsets import Evalset
from llmrelease.tasks.prefect_tasks import load_evalsets_task
from llmrelease.tasks.progress import progress_bar

__all__ = ["nightly", "nightly_flow"]


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run logger inside a flow; a plain logger when ``nightly`` is called directly (tests, CLI)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("llmrelease.nightly")


_IO = {"retries": 2, "retry_delay_seconds": [2, 10], "cache_policy": NO_CACHE}


@task(name="load-specs", cache_policy=NO_CACHE)  # bad input must fail at once, not retry
def _load_app_task(project: Path, app: str) -> AppSpec:
    return load_app(project, app)


@task(name="check-champion", cache_policy=NO_CACHE)
def _check_task(
    registry: MlflowRegistry, spec: AppSpec, evalsets: list[Evalset], tolerance: float
) -> steps.DriftReport | None:
    total = sum(e.size for e in evalsets)
    # No "preparing" text: the bar appears once the engine is ready, so an app without a champion
    # (nothing to evaluate) shows none.
    with progress_bar(f"nightly: re-evaluating {spec.name}'s champion", total) as advance:
        report = steps.check_champion(registry, spec, evalsets, progress=advance, tolerance=tolerance)
    logger = get_run_logger()
    if report is None:
        logger.info("%s: no champion yet; nothing to check", spec.name)
    elif report.status == "drift":
        logger.warning(
            "DRIFT %s champion v%s: %s%s",
            spec.name,
            report.champion_version,
            ", ".join(f"{r.metric} {r.delta:+.4f}" for r in report.drifted if r.delta is not None)
            or "no metric beyond tolerance",
            f"; gates failing now: {', '.join(g['name'] for g in report.failed_gates)}"
            if report.failed_gates
            else "",
        )
    elif report.status == "unknown":
        logger.warning("%s champion v%s: drift unknown: %s", spec.name, report.champion_version, report.notes)
    else:
        logger.info("%s champion v%s: no drift (tolerance %g)", spec.name, report.champion_version, tolerance)
    return report


@task(name="log-drift", **_IO)
def _log_task(registry: MlflowRegistry, spec: AppSpec, report: steps.DriftReport) -> str:
    return steps.log_drift(registry, spec, report)


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
            spec = _load_app_task(project, app)
            evalsets = quote(load_evalsets_task(spec))
            report = _check_task(registry, spec, evalsets, tolerance)
            if report is None:
                results[app] = {"status": "no_champion"}
                continue
            run_id = _log_task(registry, spec, quote(report))
            results[app] = {**report.to_dict(), "nightly_run_id": run_id}
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
