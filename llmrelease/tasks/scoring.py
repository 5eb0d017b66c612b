"""Per-item scores from local `evaluate` modules, and their means as aggregates.

Metric names are ``<evalset>.<scorer>``; per-item scores are keyed by item id so gates can pair a
candidate with its champion on the same items.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from llmrelease.metrics import METRICS_DIR
from llmrelease.specs import Scorer

__all__ = ["Scores", "score_outputs", "field_value"]

_MODULES = {"exact_match": "exact_match", "json_valid": "json_validity", "rouge_l": "rouge_l"}


@dataclass
class Scores:
    """``items[metric][item_id]`` in [0, 1]; ``aggregates[metric]`` their mean."""

    items: dict[str, dict[str, float]] = field(default_factory=dict)
    aggregates: dict[str, float] = field(default_factory=dict)

    def merge(self, other: Scores) -> None:
        self.items.update(other.items)
        self.aggregates.update(other.aggregates)


@cache
def _metric(kind: str) -> Any:
    # Local modules only: no metric hub, ever.
    os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import evaluate

    return evaluate.load(str(METRICS_DIR / _MODULES[kind]))


def field_value(text: str | None, key: str | None) -> str:
    """The compared text: the whole output, or one key of it parsed as a JSON object ('' if absent)."""
    if key is None:
        return (text or "").strip()
    try:
        obj = json.loads(text or "")
    except ValueError:
        return ""
    if not isinstance(obj, dict) or key not in obj:
        return ""
    value = obj[key]
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _reference_value(reference: str | dict[str, Any] | None, key: str | None) -> str:
    if reference is None:
        return ""
    if key is None:
        return reference if isinstance(reference, str) else json.dumps(reference, sort_keys=True)
    if isinstance(reference, dict):
        value = reference.get(key, "")
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return field_value(reference, key)


def score_outputs(
    evalset: str,
    scorers: list[Scorer],
    ids: list[str],
    outputs: list[str],
    references: list[str | dict[str, Any] | None],
    *,
    response_schema: dict[str, Any] | None,
) -> Scores:
    scores = Scores()
    for scorer in scorers:
        metric = _metric(scorer.kind)
        if scorer.kind == "json_valid":
            result = metric.compute(
                predictions=outputs, schema=json.dumps(response_schema) if response_schema else None
            )
        else:
            preds = [field_value(o, scorer.field) if scorer.field else (o or "").strip() for o in outputs]
            refs = [_reference_value(r, scorer.field) for r in references]
            result = metric.compute(predictions=preds, references=refs)
        name = f"{evalset}.{scorer.name}"
        per_item = [float(x) for x in result["per_item"]]
        scores.items[name] = dict(zip(ids, per_item, strict=True))
        scores.aggregates[name] = sum(per_item) / len(per_item) if per_item else 0.0
    if response_schema is not None:
        scores.merge(structured_output_scores(evalset, ids, outputs, response_schema))
    return scores


def structured_output_scores(
    evalset: str, ids: list[str], outputs: list[str], response_schema: dict[str, Any]
) -> Scores:
    """Built in whenever the model has a response schema: ``<evalset>.json_parses`` (the output is
    JSON) and ``<evalset>.schema_conforms`` (and it satisfies the schema), per item and as rates.
    Decode-time enforcement should make both 1.0; measuring them catches truncation at
    ``max_tokens`` and backends that ignore the schema."""
    result = _metric("json_valid").compute(predictions=outputs, schema=json.dumps(response_schema))
    scores = Scores()
    for suffix, per_item in (("json_parses", result["parses"]), ("schema_conforms", result["per_item"])):
        values = [float(x) for x in per_item]
        scores.items[f"{evalset}.{suffix}"] = dict(zip(ids, values, strict=True))
        scores.aggregates[f"{evalset}.{suffix}"] = sum(values) / len(values) if values else 0.0
    return scores
