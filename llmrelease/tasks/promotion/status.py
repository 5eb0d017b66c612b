"""An app's state in the registry: who holds each alias, with its verdict and headline metrics (and
what production users said about it, from the latest harvest), and whether the model's aliases and
the prompt's agree.

Reading the state takes the app's lock and first finishes an alias move a killed release left
half-way (:func:`.transaction.recover`), so what it shows is what the next release will see."""

from __future__ import annotations

import json
from typing import Any

from llmrelease.locks import app_lock
from llmrelease.mlflow_registry import CHALLENGER, CHAMPION, PREVIOUS, TAG, MlflowRegistry, router_name
from llmrelease.store import redact_uri
from llmrelease.tasks.feedback.signal import latest_summary, version_row
from llmrelease.tasks.promotion.transaction import recover

__all__ = ["app_status"]


def app_status(registry: MlflowRegistry, app: str) -> dict[str, Any]:
    notes: list[str] = []
    if registry.model_tags(app) is not None:
        with app_lock(registry.tracking_uri, app):
            notes = recover(registry, app)
    aliases, disagreements = [], []
    harvest = latest_summary(registry, app)
    for alias in (CHAMPION, CHALLENGER, PREVIOUS):
        info = registry.alias(app, alias)
        prompt_alias = registry.prompt_alias(app, alias)
        row: dict[str, Any] = {"alias": alias, "version": info.version if info else None}
        if info is not None:
            row.update(
                prompt_version=info.prompt_version,
                verdict=info.tags.get(TAG + "verdict"),
                git_commit=info.tags.get(TAG + "git_commit"),
                eval_run_id=info.eval_run_id,
                prompt_alias_version=prompt_alias,
            )
            if info.eval_run_id:
                metrics = registry.client.get_run(info.eval_run_id).data.metrics
                row["metrics"] = {
                    k: v
                    for k, v in metrics.items()
                    if k.count(".") == 1
                    and not k.startswith(("serving.", "engine.", "gates.", "cost."))
                    and (not k.startswith("guard.") or k.endswith("_rate"))
                }
            fb = version_row(harvest[1], info.version, info.prompt_version) if harvest else None
            if fb is not None and fb["feedback"]:
                row["feedback"] = {
                    "negative_share": fb["negative_share"],
                    "negative_share_ci95": fb["negative_share_ci95"],
                    "feedback": fb["feedback"],
                    "requests": fb["requests"],
                    "harvest_run_id": harvest[0] if harvest else None,
                }
        expected = info.prompt_version if info is not None else None
        if prompt_alias != expected and not (info is not None and expected is None):
            disagreements.append(
                f"'{alias}': model v{info.version if info else '-'} was registered with prompt version "
                f"{expected if expected is not None else '-'}, but the prompt's '{alias}' alias is on "
                f"{prompt_alias if prompt_alias is not None else 'nothing'}"
            )
        row["agrees"] = prompt_alias == expected or (info is not None and expected is None)
        aliases.append(row)
    override = (registry.model_tags(app) or {}).get(TAG + "champion_override")
    return {
        "router": _router_status(registry, app),
        "app": app,
        "override": override if override and override != "none" else None,
        "tracking_uri": redact_uri(registry.tracking_uri),
        "versions": len(registry.versions(app)),
        "aliases": aliases,
        "disagreements": disagreements,
        "notes": notes,
    }


def _router_status(registry: MlflowRegistry, app: str) -> list[dict[str, Any]] | None:
    """Who holds the router's aliases (``<app>.router``), with each version's verdict, threshold and
    last calibration on traffic; None when the app has never released a router."""
    name = router_name(app)
    if registry.model_tags(name) is None:
        return None
    rows = []
    for alias in (CHAMPION, CHALLENGER, PREVIOUS):
        info = registry.alias(name, alias)
        row: dict[str, Any] = {"alias": alias, "version": info.version if info else None}
        if info is not None:
            calibration = info.tags.get(TAG + "router.calibration")
            row.update(
                router_version=info.tags.get(TAG + "router_spec_version"),
                decision=info.tags.get(TAG + "decision"),
                threshold=info.tags.get(TAG + "router.threshold"),
                target_share=info.tags.get(TAG + "router.target_share"),
                eval_run_id=info.eval_run_id,
                calibration=json.loads(calibration) if calibration else None,
            )
        rows.append(row)
    return rows
