"""Scorer kinds are a registry: a new kind is one decorated function, and the card, the evalset
reader, the catalogue and the scoring step all pick it up (README, 'Extending')."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from llmrelease.errors import SpecError
from llmrelease.project import load_app
from llmrelease.scorers import SCORER_KINDS, scorer_kind
from llmrelease.tasks.evaluation.evalsets import load_evalsets
from llmrelease.tasks.evaluation.scoring import score_outputs

APP = "support-triage"


@pytest.fixture
def too_long() -> Iterator[str]:
    """A kind defined the way README's 'Extending' says: one decorated function."""

    @scorer_kind("too_long", direction="lower", description="the answer is longer than 40 characters")
    def _too_long(predictions: list[str], references: list[str], schema: dict | None) -> list[float]:
        return [float(len(p) > 40) for p in predictions]

    yield "too_long"
    del SCORER_KINDS["too_long"]


def _add_scorer(project: Path, scorer: dict) -> Path:
    card = project / "evalsets" / APP / "tickets.card.yaml"
    data = yaml.safe_load(card.read_text())
    data["scorers"].append(scorer)
    card.write_text(yaml.safe_dump(data, sort_keys=False))
    return card


def test_a_registered_kind_is_usable_from_a_card(project: Path, too_long: str) -> None:
    _add_scorer(project, {"name": "verbose", "kind": too_long})
    spec = load_app(project, APP)
    assert spec.catalogue["tickets.verbose"].direction == "lower"  # the kind's declared direction
    assert load_evalsets(spec)[1].size == 72
    [card] = [e.card for e in spec.evalsets if e.name == "tickets"]
    scores = score_outputs(
        "tickets", card.scorers[-1:], ["a", "b"], ["short", "x" * 41], [None, None], response_schema=None
    )
    assert scores.items["tickets.verbose"] == {"a": 0.0, "b": 1.0}


def test_an_unknown_kind_lists_the_registered_ones(project: Path) -> None:
    _add_scorer(project, {"name": "bleu", "kind": "bleu"})
    with pytest.raises(SpecError, match="unknown scorer kind .bleu.; available: exact_match, json_val") as e:
        load_app(project, APP)
    assert e.value.field == "scorers[2].kind" and e.value.line


def test_field_is_refused_by_a_kind_that_does_not_use_it(project: Path) -> None:
    _add_scorer(project, {"name": "valid", "kind": "json_valid", "field": "category"})
    with pytest.raises(SpecError, match="'field' is not used by json_valid"):
        load_app(project, APP)


def test_a_kind_is_registered_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        scorer_kind("exact_match")(lambda p, r, s: [])
