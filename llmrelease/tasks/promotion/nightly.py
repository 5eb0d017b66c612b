"""The nightly drift check: is the champion still as good as when it was gated?

The champion was promoted on the scores of its release run. Nothing re-checks it afterwards, yet
what it is judged on moves: evalsets gain corrected labels, the serving stack (vLLM, drivers,
kernels) is upgraded under it, the guard changes. Each night its exact model spec and prompt (as
recorded by its release run) are evaluated again on the app's current evalsets and compared with
that run; a difference beyond the tolerance, or an absolute gate that the champion now fails, is
drift. Nothing moves: the result is one MLflow run and two tags on the champion version.

Plain functions; the Prefect wrappers live in ``llmrelease.flows.nightly``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from llmrelease.catalogue import MetricCatalogue
from llmrelease.engines.base import Progress
from llmrelease.errors import InputError, LLMReleaseError
from llmrelease.manifest import guard_digest, score_parts
from llmrelease.mlflow_registry import CHAMPION, PREVIOUS, TAG, MlflowRegistry, VersionInfo, utc_now
from llmrelease.project import AppSpec
from llmrelease.tasks.evaluation.evalsets import Evalset
from llmrelease.tasks.evaluation.items import paired, records_table, scores_from_json, scores_to_json
from llmrelease.tasks.evaluation.step import EngineFactory, evaluate
from llmrelease.tasks.feedback.signal import check_feedback
from llmrelease.tasks.gates.decisions import evaluate_gates
from llmrelease.tasks.promotion.record import recorded_score_parts
from llmrelease.tasks.release import guard_evaluation, release_specs

__all__ = [
    "DriftRow",
    "DriftReport",
    "NightlyFailed",
    "compare",
    "check_champion",
    "log_drift",
]

DriftStatus = Literal["ok", "drift", "unknown"]

_SAME = 1e-9
"""Per-item scores closer than this count as unchanged (they are means of 0/1 checks or ROUGE)."""


@dataclass(frozen=True)
class DriftRow:
    """One metric of the champion, then (its release run) and now."""

    metric: str
    at_release: float | None
    """Mean over the items compared (``basis="items"``) or the release run's aggregate metric."""
    now: float | None
    delta: float | None
    """now - at_release; None when either side is missing."""
    changed_items: int | None
    """Items whose score differs from the release run; None when compared by aggregate only."""
    drifted: bool
    """|delta| > tolerance."""
    basis: Literal["items", "aggregate"]
    """"items": paired on the same item ids (the evalset is unchanged since the release);
    "aggregate": the evalset changed, so only the run-level means can be compared."""
    n: int | None = None
    """Items paired (``basis="items"``)."""


@dataclass
class DriftReport:
    app: str
    champion_version: str
    release_run_id: str | None
    """The champion's release run: where its specs and its scores at release come from."""
    status: DriftStatus
    rows: list[DriftRow] = field(default_factory=list)
    failed_gates: list[dict[str, Any]] = field(default_factory=list)
    """Absolute gates of the current policy that the champion fails now (GateResult as a dict)."""
    notes: list[str] = field(default_factory=list)
    tolerance: float = 0.02
    metrics_now: dict[str, float] = field(default_factory=dict, repr=False)
    """Every metric of tonight's evaluation (scores, serving, cost): logged, not returned."""
    items_now: Mapping[str, Mapping[str, float]] = field(default_factory=dict, repr=False)
    """Tonight's per-item scores: logged so the next night (or a person) can diff them."""
    digests_now: dict[str, str] = field(default_factory=dict, repr=False)
    feedback: dict[str, Any] | None = None
    """Production feedback: the champion's negative share vs the previous champion's on the latest
    harvest (:mod:`llmrelease.tasks.feedback.signal`); a significant rise is drift."""

    @property
    def drifted(self) -> list[DriftRow]:
        return [r for r in self.rows if r.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "champion_version": self.champion_version,
            "release_run_id": self.release_run_id,
            "status": self.status,
            "tolerance": self.tolerance,
            "rows": [asdict(r) for r in self.rows],
            "drifted_metrics": [r.metric for r in self.drifted],
            "failed_gates": self.failed_gates,
            "notes": self.notes,
            "feedback": self.feedback,
        }


class NightlyFailed(LLMReleaseError):
    """At least one app could not be checked; every other app was. ``result`` holds all reports."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


def _finite(x: float | None) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def compare(
    release_items: Mapping[str, Mapping[str, float]],
    now_items: Mapping[str, Mapping[str, float]],
    release_metrics: dict[str, float],
    now_metrics: dict[str, float],
    same_digest: dict[str, bool],
    tolerance: float,
    *,
    catalogue: MetricCatalogue,
) -> tuple[list[DriftRow], list[str]]:
    """Rows (one per per-item metric measured now) and notes. Pure.

    Metric names are ``<evalset>.<score>``. Where the evalset is byte-for-byte the one the champion
    was released on, items are paired by id: a change is then the model's or the stack's, not the
    data's, and ``changed_items`` says how many answers moved. Where it changed, per-item scores of
    the release describe other rows, so only the aggregate run metrics are compared and a note says
    so (part of the delta may then be the data's).
    """
    rows: list[DriftRow] = []
    notes: list[str] = []
    evalsets = sorted({m.split(".", 1)[0] for m in now_items})
    for name in evalsets:
        if not same_digest.get(name, False):
            if any(m.startswith(f"{name}.") for m in release_metrics):
                notes.append(
                    f"evalset '{name}' changed since the release (its rows, card or scoring code): "
                    "its metrics are compared with the release run's aggregates, not item by item"
                )
            else:
                notes.append(f"evalset '{name}' has no results in the release run (added since?)")
    for metric in sorted(now_items):
        if not catalogue.per_item(metric):  # what the catalogue declares, not what the name suggests
            continue
        evalset = metric.split(".", 1)[0]
        now_scores = now_items[metric]
        then_scores = release_items.get(metric) if same_digest.get(evalset, False) else None
        if then_scores:
            now_paired, then_paired = paired(now_scores, then_scores)
            n = len(now_paired)
            if not n:
                notes.append(f"{metric}: no item in common with the release run")
                continue
            at_release = float(then_paired.mean())
            now = float(now_paired.mean())
            changed = int((abs(now_paired - then_paired) > _SAME).sum())
            delta = now - at_release
            rows.append(DriftRow(metric, at_release, now, delta, changed, abs(delta) > tolerance, "items", n))
            continue
        at_release_agg = release_metrics.get(metric)
        now_agg = now_metrics.get(metric)
        if not _finite(now_agg) and now_scores:
            now_agg = sum(now_scores.values()) / len(now_scores)
        if not _finite(at_release_agg) or not _finite(now_agg):
            if same_digest.get(evalset, False):  # a metric the release did not measure (new scorer)
                notes.append(f"{metric}: not measured by the release run; no baseline")
            rows.append(DriftRow(metric, at_release_agg, now_agg, None, None, False, "aggregate"))
            continue
        assert at_release_agg is not None and now_agg is not None
        delta = now_agg - at_release_agg
        rows.append(
            DriftRow(metric, at_release_agg, now_agg, delta, None, abs(delta) > tolerance, "aggregate")
        )
    return rows, notes


def _unknown(champion: VersionInfo, app: str, tolerance: float, note: str) -> DriftReport:
    return DriftReport(
        app, champion.version, champion.eval_run_id, "unknown", notes=[note], tolerance=tolerance
    )


def check_champion(
    registry: MlflowRegistry,
    spec: AppSpec,
    evalsets: list[Evalset],
    *,
    engine_factory: EngineFactory | None = None,
    progress: Progress | None = None,
    tolerance: float = 0.02,
) -> DriftReport | None:
    """Re-evaluate the app's champion now and compare it with its release run; None without one.

    The champion is rebuilt from its release run's artifacts (not from today's specs, which may
    hold an unreleased edit), run on the app's current evalsets (and guard), and compared with
    :func:`compare`. The current policy's absolute gates are applied to tonight's metrics too: a
    champion that no longer meets a floor is drift even when it moved less than the tolerance.
    """
    if tolerance < 0:
        raise InputError(f"tolerance must be >= 0, got {tolerance}", fix="e.g. 0.02 (two points of accuracy)")
    app = spec.name
    champion = registry.alias(app, CHAMPION)
    if champion is None:
        return None
    run_id = champion.eval_run_id
    if not run_id:
        return _unknown(
            champion,
            app,
            tolerance,
            f"champion v{champion.version} has no llmrelease release run (registered or aliased by "
            "hand?): its specs and scores at release are unknown, so it cannot be re-checked; release "
            "it through llmrelease",
        )
    try:
        model, prompt = release_specs(registry, run_id)
        run = registry.client.get_run(run_id)
    except Exception as exc:  # a deleted run or artifact: report it, the other apps still run
        return _unknown(
            champion,
            app,
            tolerance,
            f"champion v{champion.version}: its release run {run_id} cannot be read "
            f"({type(exc).__name__}: {exc})",
        )
    run_tags = dict(run.data.tags)
    release_metrics = dict(run.data.metrics)
    digests = {ev.name: ev.digest for ev in evalsets}
    same = _pairable(run_tags, score_parts(spec, evalsets))
    release_items: Mapping[str, Mapping[str, float]] = {}
    if any(same.values()):
        release_items = scores_from_json(registry.load_artifact_dict(run_id, "item_scores.json"))

    now = evaluate(  # generated afresh: yesterday's checkpoints would hide today's drift
        model,
        prompt,
        evalsets,
        project_root=spec.root,
        engine_factory=engine_factory,
        progress=progress,
        checkpoints=False,
    )
    now = guard_evaluation(spec, prompt, evalsets, now)

    rows, notes = compare(
        release_items,
        now.scores.items,
        release_metrics,
        now.metrics,
        same,
        tolerance,
        catalogue=spec.catalogue,
    )
    if run_tags.get(TAG + "guard.digest", "none") != guard_digest(spec):
        notes.append("the guard changed since the release: guard metrics now come from another classifier")
    gates = evaluate_gates(
        spec.gates, now.metrics, now.scores.items, None, catalogue=spec.catalogue, champion_version=None
    )
    failed = [asdict(r) for r in gates.failed]
    previous = registry.alias(app, PREVIOUS)
    feedback = check_feedback(
        registry,
        app,
        (champion.version, champion.prompt_version),
        (previous.version, previous.prompt_version) if previous is not None else None,
    )
    if feedback is not None:
        notes.append(feedback.text)
    rose = feedback is not None and feedback.flagged
    status: DriftStatus = "drift" if failed or rose or any(r.drifted for r in rows) else "ok"
    return DriftReport(
        app,
        champion.version,
        run_id,
        status,
        rows,
        failed,
        notes,
        tolerance,
        metrics_now={**now.metrics, **now.engine_info},
        items_now=now.scores.items,
        digests_now=digests,
        feedback=feedback.to_dict() if feedback is not None else None,
    )


_PAIRING_PARTS = ("rows", "card", "scorer_code")
"""What must be unchanged for tonight's per-item scores to mean what the release's meant. A new
engine library or guard is what the nightly check is there to catch, so it does not stop pairing."""


def _pairable(run_tags: dict[str, str], now: dict[str, dict[str, str]]) -> dict[str, bool]:
    then = recorded_score_parts(run_tags)
    if then is None:  # a release recorded before score parts: the row digest is all there is
        return {n: run_tags.get(TAG + f"evalset.{n}.digest") == p["rows"] for n, p in now.items()}
    return {n: n in then and all(then[n].get(k) == p[k] for k in _PAIRING_PARTS) for n, p in now.items()}


def _drift_tag(report: DriftReport) -> str:
    return {"ok": "false", "drift": "true"}.get(report.status, "unknown")


def log_drift(registry: MlflowRegistry, spec: AppSpec, report: DriftReport) -> str:
    """One MLflow run in the app's experiment, and the verdict as tags on the champion version.

    The version tags let anyone looking at the registry (or an alias webhook) see when the champion
    was last checked and how it stood, without searching runs. No alias moves: deciding to roll back
    is a person's (or a release's) call, made with this evidence.
    """
    drift = _drift_tag(report)
    metrics: dict[str, float] = {f"now.{k}": float(v) for k, v in report.metrics_now.items()}
    for r in report.rows:
        if r.delta is not None:
            metrics[f"drift.{r.metric}"] = r.delta
        if r.now is not None:
            metrics[f"now.{r.metric}"] = r.now
    metrics["drift.detected"] = float(report.status == "drift")
    metrics["drift.metrics_count"] = float(len(report.drifted))
    metrics["gates.failed_count"] = float(len(report.failed_gates))
    if report.feedback is not None:
        fb = report.feedback
        metrics["feedback.champion_negative_share"] = fb["champion_negative"] / fb["champion_feedback"]
        metrics["feedback.previous_negative_share"] = fb["previous_negative"] / fb["previous_feedback"]
        metrics["feedback.rise_p_value"] = fb["p_value"]
        metrics["feedback.rose"] = float(fb["flagged"])
    tags = {
        TAG + "kind": "nightly",
        TAG + "model_version": report.champion_version,
        TAG + "drift": drift,
        TAG + "release_run_id": report.release_run_id or "none",
        "mlflow.note.content": (
            f"Nightly check of champion v{report.champion_version}: {report.status}. "
            + " ".join(report.notes)
        ).strip(),
    }
    tags.update({TAG + f"evalset.{n}.digest": d for n, d in report.digests_now.items()})
    artifacts: dict[str, Any] = {"nightly/drift.json": report.to_dict()}
    if report.items_now:
        artifacts["nightly/item_scores.json"] = scores_to_json(report.items_now)
    run_id = registry.log_evaluation(
        spec.name,
        run_name=f"{spec.name}-nightly-v{report.champion_version}",
        params={
            "app": spec.name,
            "kind": "nightly",
            "model_version": report.champion_version,
            "release_run_id": report.release_run_id or "none",
            "tolerance": str(report.tolerance),
            "gate_policy": spec.gates.version,
        },
        metrics=metrics,
        tags=tags,
        tables={
            "nightly/rows.json": records_table(
                [asdict(r) for r in report.rows], None if report.rows else ["metric"]
            )
        },
        artifacts=artifacts,
        datasets=[],
    )
    registry.set_version_tags(
        spec.name,
        report.champion_version,
        {
            TAG + "nightly_at": utc_now(),
            TAG + "drift": drift,
            TAG + "nightly_run_id": run_id,
        },
    )
    return run_id
