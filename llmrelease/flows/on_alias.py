"""The on-alias flow: someone moved an alias in MLflow; check the new champion against its gates.

Triggered by the ``mlflow.model_version_alias.created`` event the webhook relay posts when MLflow's
registry webhook fires (see ``prefect.yaml``). Records a rollout or a flagged override; moves no
model alias itself (the prompt alias follows the model alias, so the pair stays consistent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from llmrelease.mlflow_registry import MlflowRegistry
from llmrelease.store import resolve_store
from llmrelease.tasks.promotion.alias_change import record_alias_change

__all__ = ["on_alias_flow"]


@flow(name="on-alias", validate_parameters=True)
def on_alias_flow(
    app: str, alias: str, version: str, delivery: str | None = None, project_dir: str = "."
) -> dict[str, Any]:
    """Record what the champion move in ``app`` means: a rollout, or a manual override (flagged).

    The MLflow store is the worker's MLFLOW_TRACKING_URI, else the project's embedded store (the
    URI may hold credentials, so it is never a flow parameter)."""
    store = resolve_store(Path(project_dir).resolve())
    registry = MlflowRegistry(store.tracking_uri, artifact_root=store.artifact_root)
    record = record_alias_change(registry, app, alias, version, delivery=delivery)
    logger = get_run_logger()
    if record.kind == "override":
        logger.warning(
            "MANUAL OVERRIDE in %s: v%s is champion although %s (moved by: %s); recorded in run %s",
            app, version, record.reason, record.moved_by, record.record_run,
        )  # fmt: skip
    else:
        logger.info("%s v%s %s: %s", app, version, record.kind, record.reason)
    return record.to_dict()
