"""Webhook payloads to Prefect events, pure: what a deployment trigger can match and a flow needs.

Event ids are derived from the sender's delivery id (uuid5), so the same delivery always becomes
the same Prefect event, whichever relay replica forwards it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

__all__ = ["PayloadError", "github_push_event", "mlflow_event", "event_id", "ZERO_SHA", "MAX_PATHS"]

ZERO_SHA = "0" * 40
MAX_PATHS = 10_000
"""More changed paths than this and the list is cut (``paths_complete: false``): the on-push flow
then asks Git for the diff instead of trusting the payload."""
_GITHUB_COMMIT_CAP = 2048  # GitHub lists at most this many commits in a push payload


class PayloadError(ValueError):
    """The JSON is well formed but not the payload this endpoint expects (answered with 400)."""


def event_id(source: str, delivery_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"llmrelease:{source}:{delivery_id}"))


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise PayloadError(f"{where}: field '{key}' must be a non-empty string")
    return value


def github_push_event(payload: Any, delivery_id: str) -> dict[str, Any] | None:
    """A ``github.push`` event, or None for a push that releases nothing (a deleted branch, a tag).

    Changed paths are the union of every pushed commit's added, modified and removed files; when
    GitHub may have cut the list (2048+ commits, a force push with no new commits), the event says
    ``paths_complete: false`` and the flow diffs ``before..after`` with Git."""
    if not isinstance(payload, dict):
        raise PayloadError("push payload must be a JSON object")
    ref = _str(payload, "ref", "push")
    repo = payload.get("repository")
    if not isinstance(repo, dict):
        raise PayloadError("push: field 'repository' must be an object")
    full_name = _str(repo, "full_name", "push.repository")
    before, after = _str(payload, "before", "push"), _str(payload, "after", "push")
    if payload.get("deleted") or after == ZERO_SHA or not ref.startswith("refs/heads/"):
        return None
    commits = payload.get("commits") or []
    if not isinstance(commits, list):
        raise PayloadError("push: field 'commits' must be a list")
    paths: set[str] = set()
    for i, commit in enumerate(commits):
        if not isinstance(commit, dict):
            raise PayloadError(f"push.commits[{i}] must be an object")
        for key in ("added", "modified", "removed"):
            files = commit.get(key) or []
            if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
                raise PayloadError(f"push.commits[{i}].{key} must be a list of paths")
            paths.update(files)
    complete = len(commits) < _GITHUB_COMMIT_CAP and len(paths) <= MAX_PATHS
    if not commits and before != after:
        complete = False  # e.g. a force push back to an older commit: GitHub lists no commits
    branch = ref.removeprefix("refs/heads/")
    default = repo.get("default_branch")
    pusher = payload.get("pusher") if isinstance(payload.get("pusher"), dict) else {}
    return {
        "id": event_id("github", delivery_id),
        "occurred": _now(),
        "event": "github.push",
        "resource": {
            "prefect.resource.id": f"github.repository.{full_name}",
            "prefect.resource.name": full_name,
            "github.ref": ref,
            "github.branch": branch,
            "github.default_branch": "true" if branch == default else "false",
        },
        "payload": {
            "repository": full_name,
            "clone_url": repo.get("clone_url") if isinstance(repo.get("clone_url"), str) else None,
            "ref": ref,
            "branch": branch,
            "before": before,
            "after": after,
            "changed_paths": sorted(paths)[:MAX_PATHS],
            "paths_complete": complete,
            "commits": len(commits),
            "pusher": pusher.get("name") if isinstance(pusher.get("name"), str) else None,
            "delivery": delivery_id,
        },
    }


_MLFLOW_FIELDS = {
    ("model_version_alias", "created"): ("name", "alias", "version"),
    ("model_version_alias", "deleted"): ("name", "alias"),
    ("prompt_alias", "created"): ("name", "alias", "version"),
    ("prompt_alias", "deleted"): ("name", "alias"),
}


def mlflow_event(payload: Any, delivery_id: str) -> dict[str, Any] | None:
    """``mlflow.<entity>.<action>`` for alias events; None for entities the pipeline does not act on."""
    if not isinstance(payload, dict):
        raise PayloadError("MLflow webhook payload must be a JSON object")
    entity, action = _str(payload, "entity", "webhook"), _str(payload, "action", "webhook")
    fields = _MLFLOW_FIELDS.get((entity, action))
    if fields is None:
        return None
    data = payload.get("data")
    if not isinstance(data, dict):
        raise PayloadError("webhook: field 'data' must be an object")
    values = {f: _str(data, f, "webhook.data") for f in fields}
    name = values["name"]
    kind = "registered_model" if entity == "model_version_alias" else "prompt"
    return {
        "id": event_id("mlflow", delivery_id),
        "occurred": payload.get("timestamp") if isinstance(payload.get("timestamp"), str) else _now(),
        "event": f"mlflow.{entity}.{action}",
        "resource": {
            "prefect.resource.id": f"mlflow.{kind}.{name}",
            "prefect.resource.name": name,
            "mlflow.alias": values["alias"],
        },
        "payload": {**values, "entity": entity, "action": action, "delivery": delivery_id},
    }
