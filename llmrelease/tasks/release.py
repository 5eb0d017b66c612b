"""The release steps as plain functions: register, compare with the champion, log, promote.

The Prefect flow calls these through thin tasks; tests call them directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from llmrelease.engines.base import Progress
from llmrelease.errors import PromotionConflict
from llmrelease.manifest import TEST_ENGINE_VERDICT, changed_parts, is_test_engine
from llmrelease.mlflow_registry import TAG, MlflowRegistry, VersionInfo
from llmrelease.outcome import Status
from llmrelease.plan import ReleasePlan
from llmrelease.project import AppSpec
from llmrelease.specs import ModelSpec, PromptSpec, content_hash
from llmrelease.tasks.evaluation.evalsets import Evalset
from llmrelease.tasks.evaluation.items import records_table, scores_from_json, scores_to_json
from llmrelease.tasks.evaluation.step import EngineFactory, Evaluation, evaluate
from llmrelease.tasks.gates.decisions import GateReport, evaluate_gates
from llmrelease.tasks.guard.step import guard_summary, run_guard, with_guard
from llmrelease.tasks.shadow.replay import ShadowResult, Side, guard_shadow, run_shadow
from llmrelease.tasks.shadow.traffic import TrafficSample

__all__ = [
    "Candidate",
    "candidate_key",
    "register_candidate",
    "champion_item_scores",
    "guard_evaluation",
    "release_specs",
    "version_side",
    "shadow_step",
    "with_shadow",
    "shadow_summary",
    "log_evaluation",
    "promote",
    "gate",
]



@dataclass(frozen=True)
class Candidate:
    app: str
    version: VersionInfo
    created: bool
    prompt_version: int
    prompt_created: bool
    champion: VersionInfo | None
    """The champion when the release started: what the candidate is compared against (compare-and-set)."""
    digests: dict[str, str]
    git_commit: str
    score_parts: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per evalset, what its scores depend on besides model and prompt (manifest.score_parts)."""
    manifest_digest: str = ""
    engine_factory: str = "vllm"

    @property
    def test_engine(self) -> bool:
        """Evaluated with a test engine (LLMRELEASE_ENGINE_FACTORY): recorded, never promoted."""
        return is_test_engine(self.engine_factory)

    @property
    def is_champion(self) -> bool:
        return self.champion is not None and self.champion.version == self.version.version


def candidate_key(model: ModelSpec, prompt: PromptSpec, engine_factory: str = "vllm") -> str:
    """The identity of a candidate. A test engine makes another candidate: its verdict is never
    attached to the version a real release of the same specs registers."""
    key = {"model": model.digest(), "prompt": prompt.digest()}
    if is_test_engine(engine_factory):
        key["engine_factory"] = engine_factory
    return content_hash(key)


def _flat(prefix: str, obj: Any, out: dict[str, str]) -> dict[str, str]:
    if isinstance(obj, dict) and obj and prefix not in ("response_schema", "engine.extra"):
        for k, v in obj.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True)
    return out


def register_candidate(registry: MlflowRegistry, plan: ReleasePlan) -> Candidate:
    """Register (or find) the prompt version and the model version of this candidate.

    Called only with a built plan (every input checked). A new candidate gets the challenger alias,
    unless it is evaluated with a test engine: that moves no alias at all.
    """
    spec, evalsets, git_commit = plan.spec, plan.evalsets, plan.git_commit
    app = spec.name
    digests = {ev.name: ev.digest for ev in evalsets}
    prompt_version, prompt_created = registry.ensure_prompt_version(
        app,
        spec.prompt.template(),
        content_hash=spec.prompt.digest(),
        commit_message=spec.prompt.description or f"{spec.prompt.version} from {git_commit}",
        tags={TAG + "git_commit": git_commit, TAG + "spec_version": spec.prompt.version},
    )
    key = candidate_key(spec.model, spec.prompt, plan.engine_factory)
    params = _flat("", spec.model.model_dump(mode="json"), {})
    params["prompt_version"] = str(prompt_version)
    tags = {TAG + f"evalset.{name}.digest": d for name, d in digests.items()}
    tags[TAG + "manifest_digest"] = plan.manifest_digest
    champion = registry.alias(app, "champion")
    existing = registry.find_candidate(app, key)
    if existing is None:
        tags.update(
            {
                TAG + "git_commit": git_commit,
                TAG + "model_spec_version": spec.model.version,
                TAG + "prompt_spec_version": spec.prompt.version,
                TAG + "model_spec_digest": spec.model.digest(),
                TAG + "engine_factory": plan.engine_factory,
            }
        )
    version, created = registry.ensure_model_version(
        app, candidate_key=key, prompt_version=prompt_version, params=params, tags=tags
    )
    candidate = Candidate(
        app,
        version,
        created,
        prompt_version,
        prompt_created,
        champion,
        digests,
        git_commit,
        plan.score_parts,
        plan.manifest_digest,
        plan.engine_factory,
    )
    if not candidate.is_champion and not candidate.test_engine:
        registry.set_challenger(app, version)
    return candidate


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


def guard_digest(spec: AppSpec) -> str:
    return spec.guard.digest()[:16] if spec.guard else "none"


def release_specs(registry: MlflowRegistry, run_id: str) -> tuple[ModelSpec, PromptSpec]:
    """The model spec and prompt a version was released with, as its release run recorded them
    (not today's files, which may hold an unreleased edit)."""
    model = ModelSpec.model_validate(registry.load_artifact_dict(run_id, "candidate/model_spec.json"))
    prompt = PromptSpec.model_validate(registry.load_artifact_dict(run_id, "candidate/prompt.json"))
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


def shadow_summary(result: ShadowResult) -> dict[str, Any]:
    """The headline numbers for the terminal report and --json."""
    keys = (
        "champion.ttft_p50_s", "candidate.ttft_p50_s", "champion.ttft_p95_s", "candidate.ttft_p95_s",
        "champion.tpot_p50_s", "candidate.tpot_p50_s", "champion.tpot_p95_s", "candidate.tpot_p95_s",
        "champion.prefix_cache_hit_rate", "candidate.prefix_cache_hit_rate",
        "champion.cost_per_1k_requests", "candidate.cost_per_1k_requests",
        "champion.prefix_cache_saving_per_1k", "candidate.prefix_cache_saving_per_1k",
        "shadow.agreement_exact", "shadow.agreement_rouge_l", "shadow.length_ks_pvalue",
        "champion.error_rate", "candidate.error_rate",
        "champion.schema_conforms_rate", "candidate.schema_conforms_rate",
        "champion.guard_response_unsafe_rate", "candidate.guard_response_unsafe_rate",
        "traffic.guard_prompt_unsafe_rate",
    )  # fmt: skip
    return {
        "requests": len(result.sample.records),
        "notes": result.notes,
        "metrics": {k: result.metrics[k] for k in keys if k in result.metrics},
    }


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
    why = ", ".join(changed[:-1]) + " and " + changed[-1] if len(changed) > 1 else changed[0]
    return (
        again.scores.items,
        f"re-evaluated champion v{champion.version} ({why} changed since its release)",
    )


def log_evaluation(
    registry: MlflowRegistry,
    spec: AppSpec,
    evalsets: list[Evalset],
    candidate: Candidate,
    evaluation: Evaluation,
    report: GateReport,
    champion_source: str,
    *,
    manifest: dict[str, Any],
) -> str:
    """One MLflow run: params, metrics (one batch), the per-item table, the gate report, the
    manifest (everything the verdict depends on), the datasets."""
    metrics = dict(evaluation.metrics)
    metrics.update(evaluation.engine_info)
    metrics["gates.passed"] = float(report.passed)
    metrics["gates.failed_count"] = float(len(report.failed))
    params = {
        "app": spec.name,
        "model_version": candidate.version.version,
        "prompt_version": str(candidate.prompt_version),
        "git_commit": candidate.git_commit,
        "champion_version": candidate.champion.version if candidate.champion else "none",
        "model_spec": spec.model.version,
        "prompt_spec": spec.prompt.version,
        "gate_policy": spec.gates.version,
        "items": str(sum(ev.size for ev in evalsets)),
        "engine_factory": candidate.engine_factory,
    }
    verdict = version_verdict(candidate, report)
    tags = {TAG + f"evalset.{n}.digest": d for n, d in candidate.digests.items()}
    tags.update(score_part_tags(candidate.score_parts))
    tags[TAG + "guard.digest"] = guard_digest(spec)
    tags[TAG + "verdict"] = verdict
    tags[TAG + "model_version"] = candidate.version.version
    tags[TAG + "manifest_digest"] = candidate.manifest_digest
    tags[TAG + "engine_factory"] = candidate.engine_factory
    tags["mlflow.note.content"] = (
        f"Gate verdict: {'PASSED' if report.passed else 'FAILED'}. Champion scores: {champion_source}."
    )
    artifacts = {
        "manifest.json": manifest,
        "gate_report.json": {**report.to_dict(), "champion_scores": champion_source},
        "item_scores.json": scores_to_json(evaluation.scores.items),
        "candidate/model_spec.json": spec.model.model_dump(mode="json"),
        "candidate/prompt.json": spec.prompt.model_dump(mode="json"),
        "candidate/gates.json": spec.gates.model_dump(mode="json"),
    }
    tables = {"eval/items.json": evaluation.items.write_table}
    if evaluation.shadow is not None:
        shadow_gates = [asdict(r) for r in report.results if spec.catalogue[r.metric].producer == "shadow"]
        artifacts["shadow/report.html"] = evaluation.shadow.html(
            f"{spec.name}: shadow v{candidate.version.version} vs champion "
            f"v{candidate.champion.version if candidate.champion else '-'}",
            shadow_gates,
            currency=spec.model.pricing.currency if spec.model.pricing else "USD",
        )
        artifacts["shadow/summary.json"] = shadow_summary(evaluation.shadow)
        tables["shadow/requests.json"] = records_table(evaluation.shadow.rows)
    if evaluation.guard is not None:
        artifacts["guard_report.json"] = {
            **guard_summary(evaluation.guard, limit=1000),
            "guard_spec": spec.guard.model_dump(mode="json") if spec.guard else None,
        }
        params["guard"] = spec.guard.version if spec.guard else "none"
    with contextlib.ExitStack() as stack:  # each evalset as a Dataset on disk while it is logged
        datasets = [
            (stack.enter_context(ev.hf_dataset()), ev.name, candidate.digests[ev.name]) for ev in evalsets
        ]
        run_id = registry.log_evaluation(
            spec.name,
            run_name=f"{spec.name}-v{candidate.version.version}",
            params=params,
            metrics=metrics,
            tags=tags,
            tables=tables,
            artifacts=artifacts,
            datasets=datasets,
        )
    registry.set_version_tags(
        spec.name, candidate.version.version, {TAG + "eval_run_id": run_id, TAG + "verdict": verdict}
    )
    return run_id


def version_verdict(candidate: Candidate, report: GateReport) -> str:
    """What the version's verdict tag says: a test engine's gates say nothing about the model."""
    if candidate.test_engine:
        return TEST_ENGINE_VERDICT
    return "passed" if report.passed else "failed"


_SCORE_KEY = TAG + "score_parts."


def score_part_tags(parts: dict[str, dict[str, str]]) -> dict[str, str]:
    """One run tag per evalset holding its score parts (compact JSON, well under MLflow's limit)."""
    return {
        _SCORE_KEY + name: json.dumps(p, sort_keys=True, separators=(",", ":"))
        for name, p in parts.items()
    }


def recorded_score_parts(run_tags: dict[str, str]) -> dict[str, dict[str, str]] | None:
    """The score parts a release run recorded; None for runs recorded before they existed."""
    found = {k[len(_SCORE_KEY) :]: json.loads(v) for k, v in run_tags.items() if k.startswith(_SCORE_KEY)}
    return found or None


def promote(
    registry: MlflowRegistry, candidate: Candidate, report: GateReport, run_id: str
) -> tuple[Status, str]:
    """Move the aliases only when every gate passed and the champion is still the one compared against."""
    if candidate.test_engine:
        return "test_engine", (
            f"not promoted: evaluated with a test engine ({candidate.engine_factory}); gates "
            f"{'passed' if report.passed else 'failed'} on its outputs, which say nothing about the model"
        )
    if not report.passed:
        names = ", ".join(r.name for r in report.failed)
        return "rejected", f"not promoted: gate(s) failed: {names}"
    try:
        registry.promote(
            candidate.app,
            candidate.version,
            expected_champion=candidate.champion.version if candidate.champion else None,
            run_id=run_id,
        )
    except PromotionConflict as exc:
        return "conflict", str(exc)
    before = f"v{candidate.champion.version}" if candidate.champion else "none"
    return "promoted", f"promoted v{candidate.version.version} to champion (previous champion: {before})"


def gate(
    spec: AppSpec,
    evaluation: Evaluation,
    champion_items: Mapping[str, Mapping[str, float]] | None,
    candidate: Candidate,
) -> GateReport:
    return evaluate_gates(
        spec.gates,
        evaluation.metrics,
        evaluation.scores.items,
        champion_items,
        catalogue=spec.catalogue,
        champion_version=candidate.champion.version if candidate.champion else None,
    )
