"""A candidate that has already failed a gate is not replayed in the shadow step (no server, no
traffic): it is rejected whatever the replay would show. Pure logic on the demo's specs with
hand-made scores; the real release that skips it is the demo history's regressed release
(tests/test_release_e2e.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from llmrelease.project import load_app
from llmrelease.tasks.evaluation.items import Scores
from llmrelease.tasks.evaluation.serving import ServingStats
from llmrelease.tasks.evaluation.step import Evaluation
from llmrelease.tasks.release import gate, skip_shadow_if_rejected
from tests.conftest import copy_project

APP = "support-triage"
CHAMPION = SimpleNamespace(champion=SimpleNamespace(version="1"))  # what the gates read of it
CHAMPION_ITEMS = {"tickets.category_accuracy": {f"t{i}": 1.0 for i in range(10)}}


def _project(tmp_path: Path, *, skip: bool | None = None) -> Path:
    project = copy_project(tmp_path / "p", guard=False)
    (project / "registry" / APP / "gates.yaml").write_text(
        yaml.safe_dump(
            {
                "version": "g",
                "gates": [
                    {"name": "accuracy-floor", "metric": "tickets.category_accuracy", "min": 0.5},
                    {"name": "shadow-cost", "metric": "shadow.cost_per_1k_requests_ratio", "max": 3.0},
                ],
            }
        )
    )
    shadow = project / "registry" / APP / "shadow.yaml"  # skip None: the key left out (the default)
    lines = [ln for ln in shadow.read_text().splitlines() if not ln.startswith("skip_if_rejected:")]
    if skip is not None:
        lines.append(f"skip_if_rejected: {str(skip).lower()}")
    shadow.write_text("\n".join(lines) + "\n")
    return project


def _evaluation(accuracy: float) -> Evaluation:
    right = round(accuracy * 10)
    scores = {f"t{i}": float(i < right) for i in range(10)}
    metric = "tickets.category_accuracy"
    return Evaluation(ServingStats(), Scores({metric: scores}, {metric: accuracy}), {metric: accuracy})


@pytest.mark.parametrize("skip", [None, True])
def test_a_failed_gate_skips_the_replay_and_its_gates_say_why(tmp_path: Path, skip: bool | None) -> None:
    spec = load_app(_project(tmp_path, skip=skip), APP)
    evaluation = skip_shadow_if_rejected(spec, _evaluation(0.1), CHAMPION_ITEMS, CHAMPION)
    why = evaluation.not_run["shadow"]
    assert why.startswith("not replayed: the candidate had already failed accuracy-floor")
    report = gate(spec, evaluation, CHAMPION_ITEMS, CHAMPION)
    verdicts = {r.name: (r.verdict, r.evidence) for r in report.results}
    assert verdicts["shadow-cost"] == ("skipped", why)
    assert verdicts["accuracy-floor"][0] == "fail" and report.decision == "fail"


def test_a_candidate_that_failed_nothing_is_replayed(tmp_path: Path) -> None:
    spec = load_app(_project(tmp_path), APP)
    before = _evaluation(1.0)
    assert skip_shadow_if_rejected(spec, before, CHAMPION_ITEMS, CHAMPION) is before


def test_skip_if_rejected_false_replays_a_failed_candidate_too(tmp_path: Path) -> None:
    spec = load_app(_project(tmp_path, skip=False), APP)
    before = _evaluation(0.1)
    assert skip_shadow_if_rejected(spec, before, CHAMPION_ITEMS, CHAMPION) is before
    # Without the replay its gate then fails closed on the missing ratio, as before.
    report = gate(spec, before, CHAMPION_ITEMS, CHAMPION)
    assert {r.name: r.verdict for r in report.results}["shadow-cost"] == "fail"


def test_no_champion_means_no_shadow_to_skip(tmp_path: Path) -> None:
    spec = load_app(_project(tmp_path), APP)
    before = _evaluation(0.1)
    assert skip_shadow_if_rejected(spec, before, None, SimpleNamespace(champion=None)) is before
