"""The scoring step: each card scorer's kind (``llmrelease.scorers``) on a chunk of outputs, and
the built-in structured-output checks. Metric names are ``<evalset>.<scorer>``; per-item scores are
keyed by item id so gates can pair a candidate with its champion on the same items.
"""

from __future__ import annotations

import json
from typing import Any

from llmrelease.scorers import Reference, field_of, get_scorer_kind, local_metric
from llmrelease.specs import Scorer
from llmrelease.tasks.evaluation.items import ScoreBuilder, Scores

__all__ = ["score_outputs", "score_chunk", "structured_output_scores", "field_value", "reference_has_field"]


def field_value(text: str | None, key: str | None) -> str:
    """The compared text: the whole output, or one key of it parsed as a JSON object ('' if absent)."""
    value = field_of(text, key)
    return "" if value is None else value


def reference_has_field(reference: Reference, key: str) -> bool:
    """Whether a reference carries ``key`` (a JSON object, or text that parses as one). Checked for
    every row when an evalset loads: a scorer's ``field`` the references lack would compare
    nothing with nothing."""
    return field_of(reference, key) is not None


def score_chunk(
    scorers: list[Scorer],
    outputs: list[str],
    references: list[Reference],
    *,
    response_schema: dict[str, Any] | None,
) -> dict[str, list[float]]:
    """Per-item scores of one chunk, by scorer name (plus ``json_parses`` and ``schema_conforms``
    when the model has a response schema)."""
    out: dict[str, list[float]] = {}
    for scorer in scorers:
        kind = get_scorer_kind(scorer.kind)
        preds = [field_of(o, scorer.field) for o in outputs]
        refs = [field_of(r, scorer.field) for r in references]
        if scorer.field is not None and any(r is None for r in refs):
            raise ValueError(f"a reference lacks field '{scorer.field}' (evalsets are checked at load)")
        raw = kind.score([p or "" for p in preds], [r or "" for r in refs], response_schema)
        # An answer without the compared field scores 0, whatever the kind makes of '' vs ''.
        out[scorer.name] = [0.0 if p is None else float(x) for p, x in zip(preds, raw, strict=True)]
    if response_schema is not None:
        # Built in whenever the model has a response schema: the output is JSON, and it satisfies
        # the schema. Decode-time enforcement should make both 1.0; measuring them catches
        # truncation at max_tokens and backends that ignore the schema.
        checker = local_metric("json_validity")
        result = checker.compute(predictions=outputs, schema=json.dumps(response_schema))
        out["json_parses"] = [float(x) for x in result["parses"]]
        out["schema_conforms"] = [float(x) for x in result["per_item"]]
    return out


def score_outputs(
    evalset: str,
    scorers: list[Scorer],
    ids: list[str],
    outputs: list[str],
    references: list[Reference],
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
