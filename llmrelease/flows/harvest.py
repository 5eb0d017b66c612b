"""The harvest flow: production feedback -> versioned evalset, SFT and preference snapshots.

Reads the app's traffic log (and/or the production traces of an MLflow experiment), attributes
every request to the model and prompt version that answered, writes the content-addressed
snapshots and records a harvest run in MLflow. Moves no alias and changes no evalset: a person
reviews the regression evalset and commits it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from llmrelease.mlflow_registry import MlflowRegistry
from llmrelease.project import load_app
from llmrelease.store import redact_uri, resolve_store
from llmrelease.tasks.feedback import step as steps

__all__ = ["harvest", "harvest_flow"]


def harvest(
    project: Path,
    app: str,
    *,
    traffic: str | None = None,
    traces: str | None = None,
    out: Path | None = None,
    on_bad_line: str = "fail",
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    project = project.resolve()
    spec = load_app(project, app)
    source = steps.traffic_source(spec, traffic, traces=traces)
    store = resolve_store(project, tracking_uri)
    registry = MlflowRegistry(store.tracking_uri, artifact_root=store.artifact_root)
    result = steps.harvest_app(spec, registry, source, traces=traces, on_bad_line=on_bad_line)
    target = out if out is not None else steps.default_out(project, app)
    target = target if target.is_absolute() else project / target
    paths = steps.write_snapshots(result, target)
    run_id = steps.log_harvest(registry, spec, result, paths)
    return {
        "app": app,
        "summary": result.summary,
        "files": {kind: str(p) for kind, p in paths.items()},
        "run_id": run_id,
        "tracking_uri": redact_uri(registry.tracking_uri),
    }


@flow(name="harvest", validate_parameters=True)
def harvest_flow(
    app: str,
    project_dir: str = ".",
    traffic: str | None = None,
    traces: str | None = None,
    out: str | None = None,
    on_bad_line: str = "fail",
) -> dict[str, Any]:
    """Harvest ``app``'s production feedback into a regression evalset, an SFT set and a preference
    set (content-addressed files) and record the harvest run. Moves nothing. The store comes from
    the environment (``MLFLOW_TRACKING_URI``), never from a parameter: a URI may hold credentials."""
    return harvest(
        Path(project_dir),
        app,
        traffic=traffic,
        traces=traces,
        out=Path(out) if out else None,
        on_bad_line=on_bad_line,
    )
