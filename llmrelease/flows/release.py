"""The release flow, written like the runbook it replaces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.utilities.annotations import quote

from llmrelease.gitrepo import at_commit
from llmrelease.mlflow_registry import CHAMPION, MlflowRegistry
from llmrelease.outcome import ReleaseOutcome
from llmrelease.store import redact_uri, resolve_store
from llmrelease.tasks.guard.step import guard_summary
from llmrelease.tasks.prefect_tasks import (
    champion_scores_task,
    evaluate_task,
    gate_task,
    guard_task,
    log_task,
    plan_task,
    promote_task,
    register_candidate_task,
    shadow_task,
)
from llmrelease.tasks.reporting.prefect_run import (
    final_state,
    initial_run_name,
    publish_gate_table,
    rename_run,
)
from llmrelease.tasks.shadow.replay import shadow_summary

__all__ = ["release", "release_flow"]


def release(
    app: str,
    *,
    project: Path,
    prompt_file: Path | None = None,
    model_file: Path | None = None,
    git_commit: str | None = None,
    tracking_uri: str | None = None,
    artifact_root: str | None = None,
    allow_rolled_back: bool = False,
) -> ReleaseOutcome:
    # 1. Plan: read, check and resolve every input (specs, model sources, engine arguments,
    #    evalsets, traffic) and write the manifest. Bad input stops here, before anything is registered.
    plan = plan_task(project, app, prompt_file, model_file, git_commit)
    spec = plan.spec
    # quote(): Prefect walks task arguments looking for futures; evalsets and per-item results are
    # large (10k rows took 40 s of walking per release), so they are passed through untouched.
    evalsets = quote(plan.evalsets)
    traffic = quote(plan.traffic)  # production requests for the shadow comparison
    # Explicit URI > MLFLOW_TRACKING_URI > the project's embedded SQLite store (as the CLI does).
    store = resolve_store(spec.root, tracking_uri)
    registry = MlflowRegistry(store.tracking_uri, artifact_root=artifact_root or store.artifact_root)

    # 2. Register the candidate (prompt version + model version), or find it if unchanged. Under the
    #    app's lock, which first finishes whatever a killed release left half-way.
    candidate = register_candidate_task(registry, quote(plan), allow_rolled_back)
    rename_run(f"{app} v{candidate.version.version} (prompt v{candidate.prompt_version})")
    champion_before = candidate.champion.version if candidate.champion else None
    if candidate.is_champion:
        return ReleaseOutcome(
            app,
            "already_champion",
            candidate.version.version,
            candidate.prompt_version,
            champion_before,
            champion_before,
            redact_uri(registry.tracking_uri),
            run_id=candidate.version.eval_run_id,
            notes=[*candidate.notes, f"v{candidate.version.version} is already the champion: nothing to do"],
        )

    # 3. Evaluate the candidate in one batch, check its prompts and responses with the guard, and
    #    get the champion's scores on the same items.
    if spec.gates.stats.sequential:  # the gates are watched on the stream: the champion's scores first
        champion_items, champion_source = champion_scores_task(registry, spec, evalsets, candidate)
        evaluation = evaluate_task(spec, evalsets, quote(champion_items))
    else:
        evaluation = evaluate_task(spec, evalsets)
        champion_items, champion_source = champion_scores_task(registry, spec, evalsets, candidate)
    evaluation = guard_task(spec, evalsets, quote(evaluation))
    # ...and replay recorded production traffic through both, the way a shadow deployment would
    # (unless a gate already failed: then the candidate is rejected whatever the replay shows).
    evaluation = shadow_task(
        registry, spec, candidate, quote(evaluation), traffic, quote(champion_items), evalsets
    )

    # 4. Gate, record everything (challenger moves to the candidate with its verdict), and promote
    #    only if every gate passed and the champion is still the one it was compared with.
    report = gate_task(spec, evalsets, quote(evaluation), quote(champion_items), candidate)
    run_id = log_task(
        registry, spec, evalsets, candidate, quote(evaluation), report, champion_source, quote(plan.manifest),
        quote(champion_items),
    )  # fmt: skip
    status, note = promote_task(registry, candidate, report, run_id)
    publish_gate_table(
        app, candidate.version.version, status, report.to_dict(), run_id=run_id,
        tracking_uri=redact_uri(registry.tracking_uri),
    )  # fmt: skip

    after = registry.alias(app, CHAMPION)
    return ReleaseOutcome(
        app,
        status,
        candidate.version.version,
        candidate.prompt_version,
        champion_before,
        after.version if after else None,
        redact_uri(registry.tracking_uri),
        run_id=run_id,
        report=report.to_dict(),
        metrics={**evaluation.metrics, **evaluation.engine_info},
        notes=[
            *candidate.notes,
            f"champion scores: {champion_source}",
            *(f"{step}: {why}" for step, why in evaluation.not_run.items()),
            note,
        ],
        guard=guard_summary(evaluation.guard) if evaluation.guard is not None else None,
        shadow=shadow_summary(evaluation.shadow) if evaluation.shadow is not None else None,
    )


@flow(name="release", flow_run_name=initial_run_name, validate_parameters=True)
def release_flow(
    app: str,
    project_dir: str = ".",
    prompt_file: str | None = None,
    model_file: str | None = None,
    git_commit: str | None = None,
    tracking_uri: str | None = None,
    artifact_root: str | None = None,
    allow_rolled_back: bool = False,
) -> Any:
    """Release one app: validate specs and evalsets, register the candidate, evaluate it on vLLM,
    compare it with the champion, apply the gates and move the aliases only if every gate passed.

    With ``git_commit`` (a push, a schedule pinned to a commit), the specs are read at that commit
    from a temporary worktree of the project's Git checkout; results go to the project's store."""
    project = Path(project_dir).resolve()
    store = resolve_store(project, tracking_uri)
    with at_commit(project, git_commit) as root:
        outcome = release(
            app,
            project=root,
            prompt_file=Path(prompt_file).resolve() if prompt_file else None,
            model_file=Path(model_file).resolve() if model_file else None,
            git_commit=git_commit,
            tracking_uri=store.tracking_uri,
            artifact_root=artifact_root or store.artifact_root,
            allow_rolled_back=allow_rolled_back,
        )
    # A verdict is a COMPLETED run named after it (Promoted, Rejected, Inconclusive...): filterable
    # in the Prefect UI, and never confused with Failed (an error) or Crashed (a dead process).
    return final_state(outcome.to_dict())
