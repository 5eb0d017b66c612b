"""The release run in MLflow: params, metrics, the per-item table, the gate report, the manifest
and the datasets; the verdict and score-part tags that later releases and the nightly check read."""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from typing import Any

from llmrelease.faults import checkpoint
from llmrelease.locks import app_lock
from llmrelease.manifest import TEST_ENGINE_VERDICT, guard_digest
from llmrelease.mlflow_registry import CHAMPION, TAG, MlflowRegistry
from llmrelease.project import AppSpec
from llmrelease.tasks.evaluation.evalsets import Evalset
from llmrelease.tasks.evaluation.items import records_table, scores_to_json
from llmrelease.tasks.evaluation.step import Evaluation
from llmrelease.tasks.gates.decisions import GateReport
from llmrelease.tasks.guard.step import guard_summary
from llmrelease.tasks.promotion.candidate import Candidate, VersionState
from llmrelease.tasks.promotion.pages import write_version_page
from llmrelease.tasks.reporting.release_html import ReleaseReportBuilder
from llmrelease.tasks.shadow.replay import shadow_summary

__all__ = [
    "log_evaluation",
    "record_verdict",
    "version_verdict",
    "gate_metrics",
    "harvest_tags",
    "gate_tags",
    "score_part_tags",
    "recorded_score_parts",
]


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
    champion_items: Mapping[str, Mapping[str, float]] | None = None,
    trace_progress: Callable[[int], None] | None = None,
) -> str:
    """One MLflow run: params, metrics (one batch), the per-item table, the gate report, the
    manifest (everything the verdict depends on), the datasets."""
    metrics = dict(evaluation.metrics)
    metrics.update(evaluation.engine_info)
    metrics["gates.passed"] = float(report.passed)
    metrics["gates.failed_count"] = float(len(report.failed))
    metrics["gates.inconclusive_count"] = float(len(report.inconclusive))
    metrics.update(gate_metrics(report))
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
        "engine_backend": spec.model.engine.backend,
    }
    verdict = version_verdict(candidate, report)
    tags = {TAG + f"evalset.{n}.digest": d for n, d in candidate.digests.items()}
    tags.update(harvest_tags(evalsets))
    tags.update(score_part_tags(candidate.score_parts))
    tags[TAG + "guard.digest"] = guard_digest(spec)
    tags[TAG + "model_version"] = candidate.version.version
    tags[TAG + "manifest_digest"] = candidate.manifest_digest
    if candidate.notes:
        tags[TAG + "registration_notes"] = "\n".join(candidate.notes)[:4900]
    tags[TAG + "engine_factory"] = candidate.engine_factory
    tags[TAG + "engine_backend"] = spec.model.engine.backend
    for step, why in evaluation.not_run.items():  # e.g. llmrelease.not_run.shadow: which gates failed
        tags[TAG + f"not_run.{step}"] = why[:4900]
    tags["mlflow.note.content"] = (
        f"Gate verdict: {report.decision.upper()}. Champion scores: {champion_source}."
    )
    artifacts = {
        "manifest.json": manifest,
        "gate_report.json": {**report.to_dict(), "champion_scores": champion_source},
        "item_scores.json": scores_to_json(evaluation.scores.items),
        "candidate/model_spec.json": spec.model.model_dump(mode="json"),
        "candidate/prompt.json": spec.prompt.model_dump(mode="json"),
        "candidate/gates.json": spec.gates.model_dump(mode="json"),
    }
    row_tags = {
        (ev.name, row.id): row.tags for ev in evalsets for chunk in ev.batches() for row in chunk if row.tags
    }
    artifacts["release_report.html"] = release_report(
        spec, candidate, evaluation, report, champion_source, champion_items, row_tags
    )
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
            final_tags={TAG + "verdict": verdict},  # last: a run with a verdict has all its artifacts
            inside_run=lambda run_id: registry.log_item_traces(
                spec.name,
                run_id,
                model_id=candidate.version.tags.get(TAG + "logged_model_id"),
                prompt_version=candidate.prompt_version,
                items=trace_items(evaluation, row_tags),
                progress=trace_progress,
            ),
        )
    record_verdict(registry, candidate, run_id, verdict, gate_tags(report))
    write_version_page(
        registry,
        candidate,
        run_id,
        verdict,
        report.to_dict(),
        champion_source=champion_source,
        guard=guard_summary(evaluation.guard) if evaluation.guard is not None else None,
        shadow=shadow_summary(evaluation.shadow) if evaluation.shadow is not None else None,
    )
    return run_id


_RECORD_FIELDS = frozenset(
    ("evalset", "id", "inputs", "output", "reference")
    + ("prompt_tokens", "output_tokens", "latency_s", "ttft_s", "mean_logprob")
)
"""Record fields that are not scores (the confidence ``mean_logprob`` is not an assessment either)."""


def trace_items(
    evaluation: Evaluation, row_tags: Mapping[tuple[str, str], list[str]]
) -> Iterator[dict[str, Any]]:
    """The item records on disk as MLflow evaluation items, one chunk in memory at a time: scores
    become assessments, the guard's verdicts labels, the reference an expectation."""
    for chunk in evaluation.items.chunks(500):
        for rec in chunk:
            scores = {
                k: v
                for k, v in rec.items()
                if k not in _RECORD_FIELDS and not k.startswith("guard_") and isinstance(v, int | float)
            }
            labels = {k: v for k, v in rec.items() if k in ("guard_prompt", "guard_response") and v}
            yield {
                **{k: rec.get(k) for k in ("evalset", "id", "output", "reference", "latency_s", "ttft_s")},
                **{k: rec.get(k) for k in ("prompt_tokens", "output_tokens")},
                "inputs": json.loads(rec["inputs"]) if rec.get("inputs") else {},
                "scores": scores,
                "labels": labels,
                "tags": row_tags.get((rec["evalset"], rec["id"]), []),
            }


def release_report(
    spec: AppSpec,
    candidate: Candidate,
    evaluation: Evaluation,
    report: GateReport,
    champion_source: str,
    champion_items: Mapping[str, Mapping[str, float]] | None,
    row_tags: Mapping[tuple[str, str], list[str]],
) -> str:
    """``release_report.html``: the page a reviewer reads (gates, per-tag scores against the
    champion, the items where they disagree, distributions), built from the item records on disk
    chunk by chunk."""
    builder = ReleaseReportBuilder(
        champion_items=champion_items,
        row_tags=row_tags,
        directions={name: spec.catalogue[name].direction for name in spec.catalogue},
    )
    for chunk in evaluation.items.chunks(1000):
        builder.add(chunk)
    champion = f"v{candidate.champion.version}" if candidate.champion else "none"
    return builder.html(
        title=f"{spec.name}: release of v{candidate.version.version}",
        gate_report=report.to_dict(),
        subtitle_lines=[
            f"model version v{candidate.version.version}, prompt version {candidate.prompt_version}, "
            f"git {candidate.git_commit[:12]}; champion {champion}",
            f"champion scores: {champion_source}",
            f"gate policy {spec.gates.version}; model spec {spec.model.version}; "
            f"prompt spec {spec.prompt.version}",
        ],
    )


def record_verdict(
    registry: MlflowRegistry,
    candidate: Candidate,
    run_id: str,
    verdict: str,
    extra_tags: dict[str, str] | None = None,
) -> None:
    """Tag the version with its verdict and release run, and move ``challenger`` to it: challenger is
    always the version evaluated last, with its verdict (a test engine's moves no alias). Under the
    app's lock, so it never lands between a promotion's compare and its moves."""
    with app_lock(registry.tracking_uri, candidate.app):
        registry.set_version_tags(
            candidate.app,
            candidate.version.version,
            {**(extra_tags or {}), TAG + "eval_run_id": run_id, TAG + "verdict": verdict},
        )
        champion = registry.alias(candidate.app, CHAMPION)  # now, not when the release started
        if not candidate.test_engine and (champion is None or champion.version != candidate.version.version):
            registry.set_challenger(candidate.app, candidate.version)
        checkpoint("log.challenger_moved")


def version_verdict(candidate: VersionState, report: GateReport) -> str:
    """What the version's verdict tag says (a candidate's or a router's; the on-alias check reads
    it): a test engine's gates say nothing about the model."""
    if candidate.test_engine:
        return TEST_ENGINE_VERDICT
    return {"pass": "passed", "fail": "failed", "inconclusive": "inconclusive"}[report.decision]


_GATE_FIELDS = (
    "value",
    "delta",
    "bound",
    "bound_adjusted",
    "p_value",
    "p_adjusted",
    "mde",
    "effective_n",
    "design_effect",
    "items_needed",
)
_VERDICT_CODE = {"pass": 1.0, "fail": 0.0, "inconclusive": 0.5}


def _metric_key(name: str) -> str:
    """A gate name as an MLflow metric/tag key segment (letters, digits, ``_-. /`` only)."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)


def harvest_tags(evalsets: list[Evalset]) -> dict[str, str]:
    """An evalset harvested from production feedback cites the snapshot it came from, and whether its
    rows are still the harvest's bytes (a reviewer may have dropped or fixed rows)."""
    import hashlib

    tags = {}
    for ev in evalsets:
        source = ev.ref.card.harvest
        if source is None:
            continue
        with ev.ref.path.open("rb") as fh:
            now = hashlib.file_digest(fh, "sha256").hexdigest()
        tags[TAG + f"evalset.{ev.name}.harvest_digest"] = source.digest
        tags[TAG + f"evalset.{ev.name}.harvest_rows_unchanged"] = str(now == source.digest).lower()
    return tags


def gate_metrics(report: GateReport) -> dict[str, float]:
    """``gate.<name>.<field>`` for every number a gate row shows, and ``gate.<name>.verdict`` (1 pass,
    0.5 inconclusive, 0 fail): charts in the MLflow UI compare them across releases."""
    out: dict[str, float] = {}
    for r in report.results:
        key = "gate." + _metric_key(r.name)
        if r.verdict in _VERDICT_CODE:
            out[key + ".verdict"] = _VERDICT_CODE[r.verdict]
        for name in _GATE_FIELDS:
            v = getattr(r, name)
            if v is not None and math.isfinite(float(v)):
                out[f"{key}.{name}"] = float(v)
    return out


def gate_tags(report: GateReport) -> dict[str, str]:
    """Model-version tags a reviewer reads in the registry: the decision, the undecided gates and
    what would decide them, and one line per comparison gate (delta, bound, p, MDE)."""
    tags = {TAG + "gates.decision": report.decision}
    if report.inconclusive:
        tags[TAG + "gates.inconclusive"] = ", ".join(
            r.name + (f" (~{r.items_needed} items)" if r.items_needed else "") for r in report.inconclusive
        )[:4900]
    for r in report.results:
        if r.kind == "non_inferiority" and r.delta is not None:
            tags[TAG + "gate." + _metric_key(r.name)] = (
                f"{r.verdict}: delta {r.delta:+.4f}, bound {_tag_num(r.bound_adjusted, '+.4f')}, "
                f"p {_tag_num(r.p_adjusted, '.3g')}, n {r.n}, MDE {_tag_num(r.mde, '.4f')}"
            )
    return tags


def _tag_num(v: float | None, fmt: str) -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, fmt)


_SCORE_KEY = TAG + "score_parts."


def score_part_tags(parts: dict[str, dict[str, str]]) -> dict[str, str]:
    """One run tag per evalset holding its score parts (compact JSON, well under MLflow's limit)."""
    return {
        _SCORE_KEY + name: json.dumps(p, sort_keys=True, separators=(",", ":")) for name, p in parts.items()
    }


def recorded_score_parts(run_tags: dict[str, str]) -> dict[str, dict[str, str]] | None:
    """The score parts a release run recorded; None for runs recorded before they existed."""
    found = {k[len(_SCORE_KEY) :]: json.loads(v) for k, v in run_tags.items() if k.startswith(_SCORE_KEY)}
    return found or None
