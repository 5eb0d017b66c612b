"""The on-push flow: a push to the default branch releases the apps whose specs or evalsets changed.

Triggered by the ``github.push`` event the webhook relay posts (see ``prefect.yaml``). Each touched
app is released at the pushed commit, one after another, either in this flow run (a subflow) or as
a run of another deployment (``release_deployment``, e.g. ``release/release-gpu`` so generation
happens on the GPU pool). One app's failure does not stop the others; the run fails at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from llmrelease import gitrepo
from llmrelease.errors import InputError
from llmrelease.flows.release import release_flow
from llmrelease.project import list_apps
from llmrelease.tasks.triggers.push import apps_touched

__all__ = ["on_push_flow", "changed_files"]


def changed_files(
    project: Path, before: str, after: str, payload_paths: list[str] | None, paths_complete: bool
) -> tuple[list[str] | None, str]:
    """(changed paths, where they came from); None means "unknown: release every app"."""
    if gitrepo.is_repo(project):
        diff = gitrepo.changed_paths(project, before, after)
        if diff is not None:
            return diff, f"git diff {before[:12]}..{after[:12]}"
    if paths_complete and payload_paths is not None:
        return payload_paths, "the push payload"
    return None, "unknown (GitHub listed no complete file list and Git has no diff): every app"


def _release_via_deployment(name: str, app: str, commit: str) -> dict[str, Any]:
    from prefect.deployments import run_deployment

    run = run_deployment(name, parameters={"app": app, "git_commit": commit}, timeout=None)
    state = run.state
    status = state.type.value.lower() if state else "unknown"
    return {"status": status, "flow_run": str(run.id), "flow_run_name": run.name}


@flow(name="on-push", validate_parameters=True)
def on_push_flow(
    repository: str,
    ref: str,
    before: str,
    after: str,
    changed_paths: list[str] | None = None,
    paths_complete: bool = True,
    project_dir: str = ".",
    project_subdir: str | None = None,
    release_deployment: str | None = None,
) -> dict[str, Any]:
    """Release every app a push touched, at the pushed commit.

    ``project_dir``: the project (registry/, evalsets/) in the worker's clone of ``repository``,
    at its top or in a subdirectory; ``project_subdir``: that subdirectory, needed only when the
    directory is not a Git checkout (Git knows it otherwise). ``release_deployment``: run each
    release as that deployment (``flow/deployment``) instead of in this run."""
    logger = get_run_logger()
    project = Path(project_dir).resolve()
    if not gitrepo.is_sha(after):
        raise InputError(f"'after' must be a commit sha, got {after!r}")
    paths, source = changed_files(project, before, after, changed_paths, paths_complete)
    with gitrepo.at_commit(project, after) as root:
        apps = list_apps(root)
    if project_subdir is None:
        project_subdir = gitrepo.subdir(project) if gitrepo.is_repo(project) else ""
    touched = apps if paths is None else apps_touched(paths, apps, subdir=project_subdir)
    logger.info(
        "push to %s %s (%s..%s): %d changed file(s) from %s; apps to release: %s",
        repository, ref, before[:12], after[:12], len(paths or []), source, ", ".join(touched) or "none",
    )  # fmt: skip
    results: dict[str, Any] = {}
    for app in touched:
        if release_deployment:
            results[app] = _release_via_deployment(release_deployment, app, after)
            continue
        state = release_flow(app=app, project_dir=str(project), git_commit=after, return_state=True)
        if state.is_completed():
            outcome = state.result()
            results[app] = {"status": outcome["status"], "champion": outcome["champion_after"]}
        else:
            results[app] = {"status": "failed", "error": str(state.message or state.type.value)}
    failed = [
        a
        for a, r in results.items()
        if r["status"] not in ("promoted", "rejected", "already_champion", "completed")
    ]
    summary = {"repository": repository, "after": after, "changed_from": source, "apps": results}
    if failed:
        raise RuntimeError(f"release failed for {', '.join(failed)}: {summary}")
    return summary
