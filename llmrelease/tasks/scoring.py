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
    value = _field(text, key)
    return "" if value is None else value


def _field(text: str | dict[str, Any] | None, key: str | None) -> str | None:
    """The whole text (stripped), or the value of ``key`` in it read as a JSON object; None when the
    key is absent (or the text is not a JSON object): absent is not the same as empty."""
    if key is None:
        return (text or "").strip() if not isinstance(text, dict) else json.dumps(text, sort_keys=True)
    obj = text
    if not isinstance(obj, dict):
        try:
            obj = json.loads(text or "")
        except ValueError:
            return None
    if not isinstance(obj, dict) or key not in obj:
        return None
    value = obj[key]
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def reference_has_field(reference: str | dict[str, Any] | None, key: str) -> bool:
    """Whether a reference carries ``key`` (a JSON object, or text that parses as one). Checked for
    every row when an evalset loads: a scorer's ``field`` the references lack would compare
    nothing with nothing."""
    return _field(reference, key) is not None


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
            out[scorer.name] = [float(x) for x in result["per_item"]]
            continue
        preds = [_field(o, scorer.field) for o in outputs]
        refs = [_field(r, scorer.field) for r in references]
        if scorer.field is not None and any(r is None for r in refs):
            raise ValueError(f"a reference lacks field '{scorer.field}' (evalsets are checked at load)")
        result = metric.compute(predictions=[p or "" for p in preds], references=[r or "" for r in refs])
        # An answer without the compared field scores 0, whatever the metric makes of '' vs ''.
        per_item = result["per_item"]
        out[scorer.name] = [0.0 if p is None else float(x) for p, x in zip(preds, per_item, strict=True)]
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
