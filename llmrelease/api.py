"""The typed front door: what the CLI, the demo and Python users call.

``release()`` builds the release plan first (bad input raises ``InputError`` in seconds, nothing is
registered), then runs the Prefect release flow against the resolved store and returns a
:class:`ReleaseOutcome`. Nothing here parses arguments or prints: that is the CLI's job.

    from llmrelease import api
    outcome = api.release("support-triage", project=".")
    outcome.status, outcome.exit_code, outcome.report["gates"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmrelease.outcome import ReleaseOutcome

__all__ = ["ReleaseOutcome", "release", "preflight", "harvest", "route"]


def preflight(
    app: str,
    project: Path | str = ".",
    *,
    prompt: Path | None = None,
    model: Path | None = None,
    git_commit: str | None = None,
) -> None:
    """Build the release plan (at ``git_commit`` when given) and throw it away: every input is
    checked the way the flow's first step checks it. Raises InputError on the first bad input."""
    from llmrelease.gitrepo import at_commit
    from llmrelease.plan import build_plan

    with at_commit(Path(project).resolve(), git_commit) as root:
        build_plan(root, app, prompt_file=prompt, model_file=model, commit=git_commit or "preflight")


def release(
    app: str,
    project: Path | str = ".",
    *,
    prompt: Path | None = None,
    model: Path | None = None,
    git_commit: str | None = None,
    tracking_uri: str | None = None,
    store_dir: Path | None = None,
    allow_rolled_back: bool = False,
) -> ReleaseOutcome:
    """Release ``app``: plan, register, evaluate, guard, shadow, gate, log, promote if every gate passed.

    ``prompt``/``model`` release an alternative spec file (an experiment); ``git_commit`` reads the
    specs at that commit; ``tracking_uri`` (else ``$MLFLOW_TRACKING_URI``, else the project's
    embedded SQLite store, or ``store_dir``) says where results go. A candidate that was rolled back
    is refused (RolledBackRefused) unless ``allow_rolled_back``."""
    from llmrelease.flows.release import release_flow
    from llmrelease.store import resolve_store

    project = Path(project).resolve()
    preflight(app, project, prompt=prompt, model=model, git_commit=git_commit)
    store = resolve_store(project, tracking_uri, store_dir=store_dir)
    store.check_reachable()
    with store.exported():
        result = release_flow(
            app=app,
            project_dir=str(project),
            prompt_file=str(prompt) if prompt else None,
            model_file=str(model) if model else None,
            git_commit=git_commit,
            allow_rolled_back=allow_rolled_back,
        )
    return ReleaseOutcome.from_dict(result, mlflow_ui=store.ui_command)


def harvest(
    app: str,
    project: Path | str = ".",
    *,
    traffic: str | None = None,
    traces: str | None = None,
    out: Path | None = None,
    skip_bad_lines: bool = False,
    tracking_uri: str | None = None,
    store_dir: Path | None = None,
) -> dict[str, Any]:
    """Harvest ``app``'s production feedback (``traffic``, else its shadow spec's log; and/or the
    traces, with their assessments, of the MLflow experiment ``traces``) into
    content-addressed snapshots under ``out`` (default ``<project>/harvests/<app>``) and record a
    harvest run. Returns the summary, the files written and the run id. Moves nothing."""
    from llmrelease.flows.harvest import harvest_flow
    from llmrelease.store import resolve_store

    project = Path(project).resolve()
    store = resolve_store(project, tracking_uri, store_dir=store_dir)
    store.check_reachable()
    with store.exported():
        return harvest_flow(
            app=app,
            project_dir=str(project),
            traffic=traffic,
            traces=traces,
            out=str(out) if out else None,
            on_bad_line="skip" if skip_bad_lines else "fail",
        )


def route(
    app: str,
    project: Path | str = ".",
    *,
    git_commit: str | None = None,
    tracking_uri: str | None = None,
    store_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``app``'s router (registry/<app>/router.yaml): both routes on every evalset item, the
    policy per item, the router numbers with bootstrap intervals, and the router's gates. Checks
    every input first (InputError names file, line and field), then records a router run. Returns
    the decision (``pass``/``fail``/``inconclusive``), its exit code, the numbers and the run id."""
    from llmrelease.flows.route import route_flow
    from llmrelease.gitrepo import at_commit
    from llmrelease.router_app import load_router
    from llmrelease.store import resolve_store

    project = Path(project).resolve()
    with at_commit(project, git_commit) as root:
        router = load_router(root, app)
        for r in router.routes:
            preflight(app, root, prompt=r.app.prompt_path, model=r.app.model_path)
    store = resolve_store(project, tracking_uri, store_dir=store_dir)
    store.check_reachable()
    with store.exported():
        return route_flow(app=app, project_dir=str(project), git_commit=git_commit)
