"""Per-item scores from local `evaluate` modules, and their means as aggregates.

Metric names are ``<evalset>.<scorer>``; per-item scores are keyed by item id so gates can pair a
candidate with its champion on the same items.
"""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Any

from llmrelease.metrics import METRICS_DIR
from llmrelease.specs import Scorer
from llmrelease.tasks.items import ScoreBuilder, Scores

__all__ = ["score_outputs", "score_chunk", "structured_output_scores", "field_value"]

_MODULES = {"exact_match": "exact_match", "json_valid": "json_validity", "rouge_l": "rouge_l"}


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


def score_chunk(
    scorers: list[Scorer],
    outputs: list[str],
    references: list[str | dict[str, Any] | None],
    *,
    response_schema: dict[str, Any] | None,
) -> dict[str, list[float]]:
    """Per-item scores of one chunk, by scorer name (plus ``json_parses`` and ``schema_conforms``
    when the model has a response schema)."""
    out: dict[str, list[float]] = {}
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
        out[scorer.name] = [float(x) for x in result["per_item"]]
    if response_schema is not None:
        # Built in whenever the model has a response schema: the output is JSON, and it satisfies
        # the schema. Decode-time enforcement should make both 1.0; measuring them catches
        # truncation at max_tokens and backends that ignore the schema.
        result = _metric("json_valid").compute(predictions=outputs, schema=json.dumps(response_schema))
        out["json_parses"] = [float(x) for x in result["parses"]]
        out["schema_conforms"] = [float(x) for x in result["per_item"]]
    return out


def score_outputs(
    evalset: str,
    scorers: list[Scorer],
    ids: list[str],
    outputs: list[str],
    references: list[str | dict[str, Any] | None],
    *,
    response_schema: dict[str, Any] | None,
) -> Scores:
    """One evalset's scores in one go (``<evalset>.<scorer>`` per item and as means)."""
    builder = ScoreBuilder()
    chunk = score_chunk(scorers, outputs, references, response_schema=response_schema)
    builder.add(ids, {f"{evalset}.{name}": values for name, values in chunk.items()})
    return builder.build()


def structured_output_scores(
    evalset: str, ids: list[str], outputs: list[str], response_schema: dict[str, Any]
) -> Scores:
    """Only the built-in structured-output checks: ``<evalset>.json_parses`` and
    ``<evalset>.schema_conforms``, per item and as rates."""
    return score_outputs(evalset, [], ids, outputs, [None] * len(outputs), response_schema=response_schema)
