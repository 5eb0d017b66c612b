"""The release's steps that join concepts: the guard over an evaluation, the shadow step, the
champion's scores on the candidate's items, the gates. Registration, the release run's record and
promotion are in ``tasks.promotion``. The Prefect flow calls these through thin tasks; tests call
them directly."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from llmrelease.engines.base import Progress
from llmrelease.manifest import changed_parts
from llmrelease.mlflow_registry import MlflowRegistry, VersionInfo
from llmrelease.project import AppSpec
from llmrelease.specs import ModelSpec, PromptSpec
from llmrelease.tasks.evaluation.evalsets import Evalset
from llmrelease.tasks.evaluation.items import scores_from_json
from llmrelease.tasks.evaluation.step import EngineFactory, Evaluation, evaluate
from llmrelease.tasks.gates.decisions import GateReport, evaluate_gates
from llmrelease.tasks.gates.sequential import SequentialMonitor
from llmrelease.tasks.guard.step import run_guard, with_guard
from llmrelease.tasks.promotion.candidate import Candidate
from llmrelease.tasks.promotion.record import recorded_score_parts
from llmrelease.tasks.shadow.replay import ShadowResult, Side, guard_shadow, run_shadow
from llmrelease.tasks.shadow.traffic import TrafficSample

__all__ = [
    "guard_evaluation",
    "release_specs",
    "version_side",
    "shadow_step",
    "skip_shadow_if_rejected",
    "with_shadow",
    "guard_shadow_outputs",
    "champion_item_scores",
    "gate",
]


def guard_evaluation(
    spec: AppSpec,
    prompt: PromptSpec,
    evalsets: list[Evalset],
    evaluation: Evaluation,
    *,
    progress: Progress | None = None,
) -> Evaluation:
    """The evaluation with the app's guard run over its prompts and responses (unchanged without a guard)."""
    if spec.guard is None:
        return evaluation
    outcome = run_guard(
        spec.guard,
        prompt,
        evalsets,
        evaluation.items,
        project_root=spec.root,
        spec_path=spec.guard_path,
        progress=progress,
        share=evaluation.item_ids,
    )
    return with_guard(evaluation, outcome)


def release_specs(registry: MlflowRegistry, run_id: str) -> tuple[ModelSpec, PromptSpec]:
    """The model spec and prompt a version was released with, as its release run recorded them
    (not today's files, which may hold an unreleased edit)."""
    model = ModelSpec.model_validate(registry.load_artifact_dict(run_id, "candidate/model_spec.json"))
    prompt = PromptSpec.model_validate(
        registry.load_artifact_dict(run_id, "candidate/prompt.json"), context={"recorded": True}
    )
    return model, prompt


def version_side(registry: MlflowRegistry, name: str, version: VersionInfo) -> Side | None:
    """A registered version as a shadow side: its model spec and prompt from its release run."""
    if not version.eval_run_id:
        return None
    return Side(name, version.version, *release_specs(registry, version.eval_run_id))


def shadow_step(
    registry: MlflowRegistry,
    spec: AppSpec,
    candidate: Candidate,
    *,
    sample: TrafficSample | None = None,
    progress: Progress | None = None,
) -> ShadowResult | None:
    """Replay the app's traffic through the champion and this candidate (:func:`with_shadow` joins
    the result to the evaluation, so shadow gates decide with the others). None without a shadow
    spec or a champion."""
    if spec.shadow is None or candidate.champion is None:
        return None
    champion = version_side(registry, "champion", candidate.champion)
    if champion is None:
        return None  # a hand-registered champion: its gates fail closed already
    result = run_shadow(
        spec.shadow,
        spec.name,
        champion,
        Side("candidate", candidate.version.version, spec.model, spec.prompt),
        project_root=spec.root,
        sample=sample,
        progress=progress,
    )
    if spec.guard is not None:
        guard_shadow_outputs(spec, result, champion)
    return result


def skip_shadow_if_rejected(
    spec: AppSpec,
    evaluation: Evaluation,
    champion_items: Mapping[str, Mapping[str, float]] | None,
    candidate: Candidate,
    evalsets: Sequence[Evalset] = (),
) -> Evaluation:
    """The evaluation marked "shadow not run" when a gate already fails without the replay (and
    the shadow spec says ``skip_if_rejected``), else the evaluation as it was.

    Safe for the verdict: one failed gate rejects the candidate, and a gate's verdict does not
    depend on the shadow's gates (those are absolute bounds on aggregates, outside the Holm family
    of comparisons), so the gates decided here are decided the same way at the end."""
    if spec.shadow is None or candidate.champion is None or not spec.shadow.skip_if_rejected:
        return evaluation
    trial = dataclasses.replace(evaluation, not_run={**evaluation.not_run, "shadow": "not replayed"})
    report = gate(spec, trial, champion_items, candidate, evalsets=evalsets)
    failed = [r.name for r in report.results if r.verdict == "fail"]
    if not failed:
        return evaluation
    why = f"not replayed: the candidate had already failed {', '.join(failed)} (shadow.skip_if_rejected)"
    return dataclasses.replace(evaluation, not_run={**evaluation.not_run, "shadow": why})


def with_shadow(evaluation: Evaluation, result: ShadowResult) -> Evaluation:
    """A new Evaluation with the shadow comparison's metrics and result."""
    return dataclasses.replace(evaluation, metrics={**evaluation.metrics, **result.metrics}, shadow=result)


def guard_shadow_outputs(
    spec: AppSpec, result: ShadowResult, champion: Side, candidate: Side | None = None
) -> None:
    """With a guard, the replayed traffic is classified too (prompts once, each side's responses)."""
    from llmrelease.tasks.guard.step import load_guard

    assert spec.guard is not None
    guard = load_guard(spec.guard, spec.root, spec.guard_path)
    candidate = candidate or Side("candidate", "", spec.model, spec.prompt)
    guard_shadow(result, champion, candidate, guard.classify)


def champion_item_scores(
    registry: MlflowRegistry,
    spec: AppSpec,
    evalsets: list[Evalset],
    candidate: Candidate,
    *,
    engine_factory: EngineFactory | None = None,
    progress: Progress | None = None,
) -> tuple[Mapping[str, Mapping[str, float]] | None, str]:
    """The champion's per-item scores on these evalsets: reused from its release run when nothing
    its scores depend on changed (rows, cards, scoring code, guard, engine libraries: the score
    parts of the manifest), else measured again now (guard included)."""
    champion = candidate.champion
    if champion is None:
        return None, "no champion yet"
    run_id = champion.eval_run_id
    if not run_id:
        # Fail closed: an empty score set makes every comparison gate fail, never skip.
        return {}, (
            f"champion v{champion.version} has no llmrelease evaluation run (registered by hand?): "
            "comparison gates cannot pass; release it through llmrelease first"
        )
    changed = changed_parts(recorded_score_parts(registry.run_tags(run_id)), candidate.score_parts)
    if not changed:
        stored = registry.load_artifact_dict(run_id, "item_scores.json")
        return scores_from_json(stored), f"reused from run {run_id}"
    model, prompt = release_specs(registry, run_id)
    again = evaluate(
        model, prompt, evalsets, project_root=spec.root, engine_factory=engine_factory, progress=progress
    )
    again = guard_evaluation(spec, prompt, evalsets, again)
    again.discard_checkpoints()  # its scores are used now; a kill before this resumes it
    why = ", ".join(changed[:-1]) + " and " + changed[-1] if len(changed) > 1 else changed[0]
    return (
        again.scores.items,
        f"re-evaluated champion v{champion.version} ({why} changed since its release)",
    )


def sequential_monitor(
    spec: AppSpec, evalsets: Sequence[Evalset], champion_items: Mapping[str, Mapping[str, float]] | None
) -> SequentialMonitor | None:
    """The monitor of ``statistics.sequential``, or None (off, or no champion to compare with)."""
    if not spec.gates.stats.sequential or champion_items is None:
        return None
    clustered = frozenset(ev.name for ev in evalsets if ev.ref.card.cluster)
    horizons = {ev.name: ev.size for ev in evalsets}
    return SequentialMonitor.for_policy(spec.gates, spec.catalogue, champion_items, horizons, clustered)


def gate(
    spec: AppSpec,
    evaluation: Evaluation,
    champion_items: Mapping[str, Mapping[str, float]] | None,
    candidate: Candidate,
    *,
    evalsets: Sequence[Evalset] = (),
) -> GateReport:
    """The policy's verdict; rows of an evalset whose card names a ``cluster`` key are resampled
    by cluster; gates watched on the stream are judged by their confidence sequences."""
    clusters = {ev.name: labels for ev in evalsets if (labels := ev.clusters()) is not None}
    return evaluate_gates(
        spec.gates,
        evaluation.metrics,
        evaluation.scores.items,
        champion_items,
        catalogue=spec.catalogue,
        champion_version=candidate.champion.version if candidate.champion else None,
        clusters=clusters,
        sequential=evaluation.sequential,
        not_run=evaluation.not_run,
    )
