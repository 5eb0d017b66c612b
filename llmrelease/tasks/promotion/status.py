"""An app's state in the registry: who holds each alias, with its verdict and headline metrics."""

from __future__ import annotations

from typing import Any

from llmrelease.mlflow_registry import CHALLENGER, CHAMPION, PREVIOUS, TAG, MlflowRegistry
from llmrelease.store import redact_uri

__all__ = ["app_status"]


def app_status(registry: MlflowRegistry, app: str) -> dict[str, Any]:
    aliases = []
    for alias in (CHAMPION, CHALLENGER, PREVIOUS):
        info = registry.alias(app, alias)
        row: dict[str, Any] = {"alias": alias, "version": info.version if info else None}
        if info is not None:
            row.update(
                prompt_version=info.prompt_version,
                verdict=info.tags.get(TAG + "verdict"),
                git_commit=info.tags.get(TAG + "git_commit"),
                eval_run_id=info.eval_run_id,
                prompt_alias_version=registry.prompt_alias(app, alias),
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
        aliases.append(row)
    override = (registry.model_tags(app) or {}).get(TAG + "champion_override")
    return {
        "app": app,
        "override": override if override and override != "none" else None,
        "tracking_uri": redact_uri(registry.tracking_uri),
        "versions": len(registry.versions(app)),
        "aliases": aliases,
    }
