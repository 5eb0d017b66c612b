"""INCONCLUSIVE end to end in pure logic: its exit code, its version verdict, and a person's
champion move to an inconclusive version is an override."""

from __future__ import annotations

from llmrelease.mlflow_registry import TAG
from llmrelease.outcome import EXIT_CODES, ReleaseOutcome
from llmrelease.tasks.promotion.alias_change import classify


def outcome(status: str, decision: str | None = None) -> ReleaseOutcome:
    report = None if decision is None else {"passed": decision == "pass", "decision": decision, "gates": []}
    return ReleaseOutcome("app", status, "2", 2, "1", "1", "sqlite:///x", report=report)  # type: ignore[arg-type]


def test_inconclusive_has_its_own_exit_code() -> None:
    assert EXIT_CODES["inconclusive"] == 5 and outcome("inconclusive", "inconclusive").exit_code == 5
    assert outcome("rejected", "fail").exit_code == 1
    # A test engine's gates promote nothing, but its exit code still says what they found.
    assert outcome("test_engine", "inconclusive").exit_code == 5
    assert outcome("test_engine", "pass").exit_code == 0 and outcome("test_engine", "fail").exit_code == 1
    assert outcome("inconclusive", "inconclusive").to_dict()["exit_code"] == 5


def test_a_champion_moved_by_hand_to_an_inconclusive_version_is_an_override() -> None:
    kind, reason = classify({TAG + "verdict": "inconclusive", TAG + "eval_run_id": "r1"})
    assert kind == "override" and "INCONCLUSIVE" in reason and "r1" in reason
    assert classify({TAG + "verdict": "passed", TAG + "eval_run_id": "r1"})[0] == "rollout"
