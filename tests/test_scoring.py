"""Scoring with the local evaluate modules (loaded from the repo, never from a hub)."""

from __future__ import annotations

import pytest

from llmrelease.specs import Scorer
from llmrelease.tasks.evaluation.scoring import field_value, score_outputs

SCHEMA = {
    "type": "object",
    "properties": {"category": {"enum": ["a", "b"]}, "urgency": {"enum": ["low", "high"]}},
    "required": ["category", "urgency"],
    "additionalProperties": False,
}


def test_exact_match_on_a_json_field_and_json_validity() -> None:
    outputs = [
        '{"category": "a", "urgency": "low"}',
        '{"category": "b", "urgency": "low"}',
        "not json",
        '{"category": "c", "urgency": "low"}',
    ]
    refs = [{"category": "a"}, {"category": "a"}, {"category": "a"}, {"category": "c"}]
    scores = score_outputs(
        "set",
        [Scorer(name="acc", kind="exact_match", field="category"), Scorer(name="valid", kind="json_valid")],
        ["1", "2", "3", "4"],
        outputs,
        refs,
        response_schema=SCHEMA,
    )
    assert scores.items["set.acc"] == {"1": 1.0, "2": 0.0, "3": 0.0, "4": 1.0}
    # "c" is outside the enum: parses, but does not conform to the schema.
    assert scores.items["set.valid"] == {"1": 1.0, "2": 1.0, "3": 0.0, "4": 0.0}
    assert scores.aggregates["set.acc"] == pytest.approx(0.5)


def test_json_validity_without_schema_only_needs_json() -> None:
    scores = score_outputs(
        "s",
        [Scorer(name="v", kind="json_valid")],
        ["1", "2"],
        ['{"x": 1}', "{"],
        ["", ""],
        response_schema=None,
    )
    assert scores.items["s.v"] == {"1": 1.0, "2": 0.0}


def test_exact_match_on_whole_text_strips_whitespace() -> None:
    scores = score_outputs(
        "s",
        [Scorer(name="em", kind="exact_match")],
        ["1", "2"],
        ["  Paris\n", "paris"],
        ["Paris", "Paris"],
        response_schema=None,
    )
    assert scores.items["s.em"] == {"1": 1.0, "2": 0.0}


def test_rouge_l_scores_overlap() -> None:
    scores = score_outputs(
        "s",
        [Scorer(name="r", kind="rouge_l")],
        ["1", "2", "3"],
        ["the cat sat on the mat", "a dog ran", ""],
        ["the cat sat on the mat", "the cat sat", "x"],
        response_schema=None,
    )
    r = scores.items["s.r"]
    assert r["1"] == pytest.approx(1.0)
    assert r["2"] == pytest.approx(0.0)
    assert r["3"] == 0.0


def test_field_value_handles_non_objects() -> None:
    assert field_value('{"a": "x"}', "a") == "x"
    assert field_value('{"a": 3}', "a") == "3"
    assert field_value("[1]", "a") == ""
    assert field_value(None, "a") == ""


def test_structured_output_rates_parse_and_conform() -> None:
    from llmrelease.tasks.evaluation.scoring import structured_output_scores

    schema = {
        "type": "object",
        "properties": {"category": {"enum": ["billing", "technical"]}},
        "required": ["category"],
    }
    outs = ['{"category": "billing"}', '{"category": "weather"}', '{"category": "bill', "[]"]
    s = structured_output_scores("t", ["a", "b", "c", "d"], outs, schema)
    assert s.items["t.json_parses"] == {"a": 1.0, "b": 1.0, "c": 0.0, "d": 1.0}
    assert s.items["t.schema_conforms"] == {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}
    assert s.aggregates == {"t.json_parses": 0.75, "t.schema_conforms": 0.25}


@pytest.mark.parametrize("kind", ["exact_match", "rouge_l"])
def test_an_answer_without_the_compared_field_scores_zero(kind: str) -> None:
    """Absent is not empty: an answer lacking the field (or not JSON) never matches, even where the
    metric would call '' and '' equal."""
    outputs = ['{"category": "a"}', '{"other": "a"}', "not json", '{"category": ""}']
    refs = [{"category": "a"}, {"category": "a"}, {"category": "a"}, {"category": ""}]
    scores = score_outputs(
        "set",
        [Scorer(name="s", kind=kind, field="category")],
        ["1", "2", "3", "4"],
        outputs,
        refs,
        response_schema=None,
    )
    assert scores.items["set.s"]["2"] == 0.0 and scores.items["set.s"]["3"] == 0.0
    assert scores.items["set.s"]["1"] == 1.0
