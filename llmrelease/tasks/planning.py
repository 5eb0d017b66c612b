"""``llmrelease plan``: how big each evalset must be for its gates, from the champion's evidence.

Reads what the champion's release run recorded (per-item scores, the paired spread its gates saw,
generation cost and time per item) and sizes every comparison gate with the pure
:func:`llmrelease.tasks.gates.sizing.size_gates`. Nothing is generated: a plan costs seconds.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from llmrelease.errors import InputError
from llmrelease.mlflow_registry import CHAMPION, MlflowRegistry
from llmrelease.project import AppSpec
from llmrelease.tasks.evaluation.evalsets import load_evalsets
from llmrelease.tasks.evaluation.items import scores_from_json
from llmrelease.tasks.gates.sizing import size_gates

__all__ = ["plan_sizes"]


def plan_sizes(
    registry: MlflowRegistry,
    spec: AppSpec,
    *,
    margin: float | None = None,
    power: float | None = None,
) -> dict[str, Any]:
    """The plan as a JSON-able dict: the champion it was read from, what a generated item costs,
    and one row per comparison gate (see :class:`~llmrelease.tasks.gates.sizing.GateSize`)."""
    if not any(g.kind == "non_inferiority" or g.on != "value" for g in spec.gates.gates):
        raise InputError(
            f"{spec.name}'s gates.yaml has no comparison gate (max_regression) and no gate on a bound "
            "(on: lower_bound/upper_bound): nothing to size",
            file=spec.root / "registry" / spec.name / "gates.yaml",
        )
    champion = registry.alias(spec.name, CHAMPION)
    run_id = champion.eval_run_id if champion else None
    if champion is None or not run_id:
        raise InputError(
            f"{spec.name} has no champion with a release run in {registry.tracking_uri}: a plan is read "
            "from the champion's per-item scores",
            fix=f"release the app first (llmrelease release {spec.name}), or pass --tracking-uri",
        )
    items = scores_from_json(registry.load_artifact_dict(run_id, "item_scores.json"))
    report = registry.load_artifact_dict(run_id, "gate_report.json")
    observed = {
        g["name"]: float(g["sd"])
        for g in report.get("gates", [])
        if g.get("sd") and g.get("kind") == "non_inferiority"
    }
    metrics = registry.client.get_run(run_id).data.metrics
    generated = metrics.get("serving.items") or 0.0
    cost = metrics["cost.total"] / generated if generated and "cost.total" in metrics else None
    seconds = metrics["serving.wall_s"] / generated if generated and "serving.wall_s" in metrics else None
    clusters = {ev.name: labels for ev in load_evalsets(spec) if (labels := ev.clusters()) is not None}
    rows = size_gates(
        spec.gates,
        spec.catalogue,
        items,
        clusters=clusters,
        observed_sd=observed,
        margin=margin,
        power=power,
        cost_per_item=cost,
        seconds_per_item=seconds,
    )
    return {
        "app": spec.name,
        "champion_version": champion.version,
        "run_id": run_id,
        "currency": spec.model.pricing.currency if spec.model.pricing else None,
        "cost_per_item": cost,
        "seconds_per_item": seconds,
        "statistics": spec.gates.stats.model_dump(),
        "gates": [asdict(r) for r in rows],
    }
