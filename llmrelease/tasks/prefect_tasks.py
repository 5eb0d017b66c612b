"""Prefect tasks: thin wrappers that add retries and logging around the plain step functions.

NO_CACHE: inputs are large (datasets, engines) and a release must always really run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from llmrelease.mlflow_registry import MlflowRegistry
from llmrelease.outcome import Status
from llmrelease.plan import ReleasePlan, build_plan
from llmrelease.project import AppSpec, git_commit, load_app
from llmrelease.tasks import release as steps
from llmrelease.tasks.evaluation.evalsets import Evalset, load_evalsets
from llmrelease.tasks.evaluation.step import Evaluation, evaluate
from llmrelease.tasks.gates.decisions import GateReport
from llmrelease.tasks.progress import progress_bar
from llmrelease.tasks.promotion import nightly as nightly_steps
from llmrelease.tasks.promotion.candidate import Candidate, register_candidate
from llmrelease.tasks.promotion.promote import promote
from llmrelease.tasks.promotion.record import log_evaluation
from llmrelease.tasks.shadow.replay import ShadowResult, Side, run_shadow
from llmrelease.tasks.shadow.traffic import TrafficSample, read_traffic

__all__ = [
    "plan_task",
    "load_app_task",
    "load_evalsets_task",
    "register_candidate_task",
    "load_traffic_task",
    "evaluate_task",
    "guard_task",
    "shadow_task",
    "champion_scores_task",
    "gate_task",
    "log_task",
    "promote_task",
    "shadow_replay_task",
    "check_champion_task",
    "log_drift_task",
]

_IO = {"retries": 2, "retry_delay_seconds": [2, 10], "cache_policy": NO_CACHE}


@task(name="plan", cache_policy=NO_CACHE)  # bad input must fail at once, not retry
def plan_task(
    project: Path, app: str, prompt_file: Path | None, model_file: Path | None, commit: str | None
) -> ReleasePlan:
    """Every input read, checked and resolved (specs, model sources, engine arguments, evalsets,
    traffic, manifest) before anything is registered."""
    plan = build_plan(project, app, prompt_file=prompt_file, model_file=model_file, commit=commit)
    logger = get_run_logger()
    logger.info("evalsets: %s", ", ".join(f"{e.name} ({e.size} rows)" for e in plan.evalsets))
    if plan.traffic is not None:
        logger.info("traffic: %d requests sampled from %d", len(plan.traffic.records), plan.traffic.matched)
    logger.info("manifest %s; engine %s", plan.manifest_digest, plan.engine_factory)
    if plan.test_engine:
        logger.warning("test engine %s: the verdict is recorded, no alias moves", plan.engine_factory)
    return plan


@task(name="load-specs", cache_policy=NO_CACHE)
def load_app_task(
    project: Path, app: str, prompt_file: Path | None, model_file: Path | None, commit: str | None
) -> tuple[AppSpec, str]:
    spec = load_app(project, app, prompt_file=prompt_file, model_file=model_file)
    return spec, commit or git_commit(project)


@task(name="load-evalsets", cache_policy=NO_CACHE)
def load_evalsets_task(spec: AppSpec) -> list[Evalset]:
    evalsets = load_evalsets(spec)
    get_run_logger().info("evalsets: %s", ", ".join(f"{e.name} ({e.size} rows)" for e in evalsets))
    return evalsets


@task(name="load-traffic", cache_policy=NO_CACHE)  # bad input must fail at once, not retry
def load_traffic_task(spec: AppSpec) -> TrafficSample | None:
    """Read and sample the shadow traffic log before anything is registered: a bad line stops the
    release here (file and line named), not after the candidate was registered and evaluated."""
    if spec.shadow is None:
        return None
    sample = read_traffic(
        spec.shadow.traffic, spec.name, project_root=spec.root, variables=spec.prompt.variables
    )
    get_run_logger().info(
        "traffic: %d requests sampled from %d for %s in %s%s",
        len(sample.records),
        sample.matched,
        spec.name,
        sample.source,
        f"; {len(sample.skipped)} bad lines skipped" if sample.skipped else "",
    )
    return sample


@task(name="register-candidate", **_IO)
def register_candidate_task(
    registry: MlflowRegistry, plan: ReleasePlan, allow_rolled_back: bool = False
) -> Candidate:
    c = register_candidate(registry, plan, allow_rolled_back=allow_rolled_back)
    for note in c.notes:
        get_run_logger().warning(note)
    get_run_logger().info(
        "candidate: model version %s (%s), prompt version %s (%s); champion: %s",
        c.version.version,
        "new" if c.created else "existing",
        c.prompt_version,
        "new" if c.prompt_created else "existing",
        f"v{c.champion.version}" if c.champion else "none",
    )
    return c


@task(name="generate-and-score", cache_policy=NO_CACHE)
def evaluate_task(
    spec: AppSpec,
    evalsets: list[Evalset],
    champion_items: Mapping[str, Mapping[str, float]] | None = None,
) -> Evaluation:
    """Generate and score every evalset; with ``statistics.sequential`` and the champion's scores,
    watch the comparison gates on the stream and stop an evalset once they are decided."""
    total = sum(e.size for e in evalsets)
    monitor = steps.sequential_monitor(spec, evalsets, champion_items)
    with progress_bar(f"generating {spec.name}", total, preparing="loading model and vLLM engine") as advance:
        result = evaluate(
            spec.model,
            spec.prompt,
            evalsets,
            project_root=spec.root,
            model_spec_path=spec.model_path,
            progress=advance,
            monitor=monitor,
            shuffle_seed=spec.gates.stats.seed,
        )
    if monitor is not None and monitor.watched:
        used, of = result.metrics["sequential.items_used"], result.metrics["sequential.items_total"]
        get_run_logger().info(
            "sequential gates: generated %d of %d watched items (%.0fs of generation saved)",
            used,
            of,
            result.metrics["sequential.time_saved_s"],
        )
    info = result.engine_info
    if "engine.warm" not in info:
        engine = "not started: every chunk came from checkpoints"
    elif info["engine.warm"]:
        engine = "warm"
    else:
        engine = f"started in {info.get('engine.startup_s', 0):.0f}s"
    get_run_logger().info(
        "generated %d items in %.1fs: %.0f output tokens/s (%s, engine %s)",
        total,
        result.serving.wall_s,
        result.serving.tokens_per_s,
        spec.model.engine.backend,
        engine,
    )
    reused = int(info.get("checkpoint.items_reused", 0))
    if reused:
        get_run_logger().info(
            "resumed: %d items (%d chunks) read back from checkpoints of an earlier, unfinished run; "
            "%d generated now",
            reused,
            int(info.get("checkpoint.chunks_reused", 0)),
            int(info.get("checkpoint.items_generated", 0)),
        )
    return result


@task(name="guard", cache_policy=NO_CACHE)
def guard_task(spec: AppSpec, evalsets: list[Evalset], evaluation: Evaluation) -> Evaluation:
    """Llama Guard on every prompt and response; a no-op for apps without ``guard.yaml``."""
    if spec.guard is None:
        return evaluation
    checks = sum(e.size for e in evalsets) * len(spec.guard.check)
    with progress_bar(f"guard ({spec.guard.backend})", checks, preparing="loading guard model") as advance:
        evaluation = steps.guard_evaluation(spec, spec.prompt, evalsets, evaluation, progress=advance)
    m = evaluation.metrics
    get_run_logger().info(
        "guard: %d classifications in %.1fs; unsafe responses %.1f%%, unsafe prompts %.1f%%, unparsed %.1f%%",
        int(m.get("guard.classifications", 0)),
        m.get("guard.classify_s", 0.0),
        100 * m.get("guard.response_unsafe_rate", 0.0),
        100 * m.get("guard.prompt_unsafe_rate", 0.0),
        100 * m.get("guard.unparsed_rate", 0.0),
    )
    return evaluation


@task(name="shadow", cache_policy=NO_CACHE)
def shadow_task(
    registry: MlflowRegistry,
    spec: AppSpec,
    candidate: Candidate,
    evaluation: Evaluation,
    sample: TrafficSample | None,
    champion_items: Mapping[str, Mapping[str, float]] | None = None,
    evalsets: list[Evalset] | None = None,
) -> Evaluation:
    """Champion and candidate on the same recorded production requests, through the serving path;
    not for a candidate already rejected by its other gates (``shadow.skip_if_rejected``)."""
    if spec.shadow is None or candidate.champion is None:
        return evaluation
    skipped = steps.skip_shadow_if_rejected(spec, evaluation, champion_items, candidate, evalsets or [])
    if skipped is not evaluation:
        get_run_logger().info("shadow: %s", skipped.not_run["shadow"])
        return skipped
    n = spec.shadow.traffic.n
    with progress_bar("shadow: replaying traffic", 2 * n, preparing="starting vLLM OpenAI server") as advance:
        first = True

        def tick(k: int) -> None:
            nonlocal first
            if first:
                advance(0)
                first = False
            advance(k)

        result = steps.shadow_step(registry, spec, candidate, sample=sample, progress=tick)
    if result is None:
        return evaluation
    m = result.metrics
    get_run_logger().info(
        "shadow: %d requests; TTFT p95 %.3fs -> %.3fs; cost/1k %.5f -> %.5f; agreement %.0f%%",
        len(result.sample.records),
        m.get("champion.ttft_p95_s", float("nan")),
        m.get("candidate.ttft_p95_s", float("nan")),
        m.get("champion.cost_per_1k_requests", float("nan")),
        m.get("candidate.cost_per_1k_requests", float("nan")),
        100 * m.get("shadow.agreement_exact", float("nan")),
    )
    return steps.with_shadow(evaluation, result)


@task(name="champion-scores", **_IO)
def champion_scores_task(
    registry: MlflowRegistry, spec: AppSpec, evalsets: list[Evalset], candidate: Candidate
) -> tuple[Mapping[str, Mapping[str, float]] | None, str]:
    total = sum(e.size for e in evalsets)
    with progress_bar("re-evaluating champion", total) as advance:
        items, source = steps.champion_item_scores(registry, spec, evalsets, candidate, progress=advance)
    get_run_logger().info("champion scores: %s", source)
    return items, source


@task(name="gates", cache_policy=NO_CACHE)
def gate_task(
    spec: AppSpec,
    evalsets: list[Evalset],
    evaluation: Evaluation,
    champion_items: Mapping[str, Mapping[str, float]] | None,
    candidate: Candidate,
) -> GateReport:
    return steps.gate(spec, evaluation, champion_items, candidate, evalsets=evalsets)


@task(name="log-to-mlflow", **_IO)
def log_task(
    registry: MlflowRegistry,
    spec: AppSpec,
    evalsets: list[Evalset],
    candidate: Candidate,
    evaluation: Evaluation,
    report: GateReport,
    champion_source: str,
    manifest: dict[str, Any],
    champion_items: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
    items = len(evaluation.items)
    with progress_bar(f"logging {items} items to MLflow's evaluation view", items) as advance:
        done = 0

        def written(n: int) -> None:
            nonlocal done
            advance(n - done)
            done = n

        run_id = log_evaluation(
            registry,
            spec,
            evalsets,
            candidate,
            evaluation,
            report,
            champion_source,
            manifest=manifest,
            champion_items=champion_items,
            trace_progress=written,
        )
    evaluation.discard_checkpoints()  # the outputs are in MLflow now; until here a re-run resumes
    return run_id


@task(name="promote", cache_policy=NO_CACHE)
def promote_task(
    registry: MlflowRegistry, candidate: Candidate, report: GateReport, run_id: str
) -> tuple[Status, str]:
    status, note = promote(registry, candidate, report, run_id)
    get_run_logger().info(note)
    return status, note


# ------------------------------------------------------------------------ the standalone shadow flow


@task(name="shadow-replay", cache_policy=NO_CACHE)
def shadow_replay_task(spec: AppSpec, champion: Side, candidate: Side, sample: TrafficSample) -> ShadowResult:
    assert spec.shadow is not None
    with progress_bar(
        "shadow: replaying traffic", 2 * len(sample.records), preparing="starting vLLM OpenAI server"
    ) as advance:
        result = run_shadow(
            spec.shadow,
            spec.name,
            champion,
            candidate,
            project_root=spec.root,
            sample=sample,
            progress=advance,
        )
    if spec.guard is not None:
        steps.guard_shadow_outputs(spec, result, champion, candidate)
    return result


# ---------------------------------------------------------------------------------- the nightly flow


@task(name="check-champion", cache_policy=NO_CACHE)
def check_champion_task(
    registry: MlflowRegistry, spec: AppSpec, evalsets: list[Evalset], tolerance: float
) -> nightly_steps.DriftReport | None:
    total = sum(e.size for e in evalsets)
    # No "preparing" text: the bar appears once the engine is ready, so an app without a champion
    # (nothing to evaluate) shows none.
    with progress_bar(f"nightly: re-evaluating {spec.name}'s champion", total) as advance:
        report = nightly_steps.check_champion(registry, spec, evalsets, progress=advance, tolerance=tolerance)
    logger = get_run_logger()
    if report is None:
        logger.info("%s: no champion yet; nothing to check", spec.name)
    elif report.status == "drift":
        logger.warning(
            "DRIFT %s champion v%s: %s%s",
            spec.name,
            report.champion_version,
            ", ".join(f"{r.metric} {r.delta:+.4f}" for r in report.drifted if r.delta is not None)
            or "no metric beyond tolerance",
            f"; gates failing now: {', '.join(g['name'] for g in report.failed_gates)}"
            if report.failed_gates
            else "",
        )
    elif report.status == "unknown":
        logger.warning("%s champion v%s: drift unknown: %s", spec.name, report.champion_version, report.notes)
    else:
        logger.info("%s champion v%s: no drift (tolerance %g)", spec.name, report.champion_version, tolerance)
    return report


@task(name="log-drift", **_IO)
def log_drift_task(registry: MlflowRegistry, spec: AppSpec, report: nightly_steps.DriftReport) -> str:
    return nightly_steps.log_drift(registry, spec, report)
