"""Scorer kinds: the one place where a kind of per-item score is defined.

A kind declares what it needs (a reference, a ``field``) and which way is better, and computes one
score in [0, 1] per item. Cards name kinds (``kind: rouge_l``); loading an app checks the names
against this registry, the evalset reader asks it which rows need a reference, the metric
catalogue asks it for the direction, and the scoring step calls it. Adding a kind is one
decorated function here (plus, if it wraps an ``evaluate`` module, that module's folder under
``llmrelease/metrics/``): see README, "Extending".

Light on import: ``evaluate`` is loaded on first use, from local modules only (no metric hub).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from llmrelease.errors import UnknownNameError

__all__ = [
    "Reference",
    "ScorerKind",
    "SCORER_KINDS",
    "scorer_kind",
    "get_scorer_kind",
    "field_of",
    "local_metric",
]

Reference = str | dict[str, Any] | None
Direction = Literal["higher", "lower"]
ScoreFn = Callable[[list[str], list[str], dict[str, Any] | None], list[float]]
"""(predictions, references, response schema) -> one score in [0, 1] per item. With ``uses_field``
the scoring step passes the field's values (items whose answer lacks the field score 0 whatever
this returns); without it, the whole stripped output and the reference as text."""


@dataclass(frozen=True)
class ScorerKind:
    name: str
    score: ScoreFn
    direction: Direction = "higher"
    """Which way is better unless a card's scorer declares otherwise."""
    needs_reference: bool = False
    """Every row of an evalset using this kind must have a ``reference``."""
    uses_field: bool = False
    """The card may give ``field``: compare that key of a JSON answer with the reference's."""
    description: str = ""


SCORER_KINDS: dict[str, ScorerKind] = {}


def scorer_kind(
    name: str,
    *,
    direction: Direction = "higher",
    needs_reference: bool = False,
    uses_field: bool = False,
    description: str = "",
) -> Callable[[ScoreFn], ScoreFn]:
    """Register a scorer kind (a decorator). Registering a name twice is a programming error."""

    def register(fn: ScoreFn) -> ScoreFn:
        if name in SCORER_KINDS:
            raise ValueError(f"scorer kind '{name}' is already registered")
        SCORER_KINDS[name] = ScorerKind(name, fn, direction, needs_reference, uses_field, description)
        return fn

    return register


def get_scorer_kind(name: str) -> ScorerKind:
    try:
        return SCORER_KINDS[name]
    except KeyError:
        raise UnknownNameError("scorer kind", name, list(SCORER_KINDS)) from None


def field_of(text: Reference, key: str | None) -> str | None:
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


@cache
def local_metric(module: str) -> Any:
    """A local ``evaluate`` module from ``llmrelease/metrics/<module>``; never from a hub."""
    os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import evaluate

    from llmrelease.metrics import METRICS_DIR

    return evaluate.load(str(METRICS_DIR / module))


# --------------------------------------------------------------------------------- built-in kinds


def _compared_with_reference(module: str) -> ScoreFn:
    """A kind backed by a local evaluate module that compares each output with its reference."""

    def score(predictions: list[str], references: list[str], schema: dict[str, Any] | None) -> list[float]:
        return local_metric(module).compute(predictions=predictions, references=references)["per_item"]

    return score


scorer_kind(
    "exact_match",
    needs_reference=True,
    uses_field=True,
    description="output equals the reference (both stripped; per field when given)",
)(_compared_with_reference("exact_match"))

scorer_kind(
    "rouge_l",
    needs_reference=True,
    uses_field=True,
    description="ROUGE-L F1 between output and reference text",
)(_compared_with_reference("rouge_l"))


@scorer_kind("json_valid", description="output parses as JSON and conforms to the model's response schema")
def _json_valid(predictions: list[str], references: list[str], schema: dict[str, Any] | None) -> list[float]:
    return local_metric("json_validity").compute(
        predictions=predictions, schema=json.dumps(schema) if schema else None
    )["per_item"]
