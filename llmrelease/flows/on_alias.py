"""The on-alias flow: someone moved an alias in MLflow; check the new champion against its gates.

Triggered by the ``mlflow.model_version_alias.created`` event the webhook relay posts when MLflow's
registry webhook fires (see ``prefect.yaml``). Records a rollout or a flagged override. The
app's ``manual_champion`` policy (gates.yaml) decides whether an unsigned override is only flagged
(default) or moved back; the prompt alias follows the model alias, so the pair stays consistent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from llmrelease.mlflow_registry import MlflowRegistry
from llmrelease.store import resolve_store
from llmrelease.tasks.promotion.alias_change import Policy, record_alias_change

__all__ = ["on_alias_flow"]


@flow(name="on-alias", validate_parameters=True)
def on_alias_flow(
    app: str, alias: str, version: str, delivery: str | None = None, project_dir: str = "."
) -> dict[str, Any]:
    """Record what the champion move in ``app`` means: a rollout, or a manual override (flagged).

    The MLflow store is the worker's MLFLOW_TRACKING_URI, else the project's embedded store (the
    URI may hold credentials, so it is never a flow parameter)."""
    project = Path(project_dir).resolve()
    store = resolve_store(project)
    registry = MlflowRegistry(store.tracking_uri, artifact_root=store.artifact_root)
    policy, why = manual_champion_policy(project, app)
    record = record_alias_change(registry, app, alias, version, delivery=delivery, policy=policy)
    if why:
        record.notes.append(why)
    logger = get_run_logger()
    for note in record.notes:
        logger.info("%s", note)
    if record.kind == "reverted":
        logger.warning(
            "REVERTED in %s: v%s was made champion by hand although %s; champion is v%s again "
            "(manual_champion: revert); recorded in run %s",
            app, version, record.reason, record.restored, record.record_run,
        )  # fmt: skip
    elif record.kind == "override":
        logger.warning(
            "MANUAL OVERRIDE in %s: v%s is champion although %s (moved by: %s); recorded in run %s",
            app, version, record.reason, record.moved_by, record.record_run,
        )  # fmt: skip
    else:
        logger.info("%s v%s %s: %s", app, version, record.kind, record.reason)
    return record.to_dict()


def manual_champion_policy(project: Path, app: str) -> tuple[Policy, str | None]:
    """The app's ``manual_champion`` from its gates.yaml in the worker's checkout (a router's
    registered model, ``<app>.router``, follows its app's). A missing or
    broken file must not stop the move from being recorded: it is flagged, and the note says why."""
    from llmrelease.errors import InputError
    from llmrelease.mlflow_registry import app_of
    from llmrelease.project import GATES_FILE
    from llmrelease.specfile import load_spec
    from llmrelease.specs import GatePolicy

    path = project / "registry" / app_of(app) / GATES_FILE
    if not path.is_file():
        return "flag", f"no {path}: manual_champion taken as 'flag'"
    try:
        return load_spec(path, GatePolicy).manual_champion, None
    except InputError as exc:
        return "flag", f"manual_champion taken as 'flag': {path} does not load ({exc})"
