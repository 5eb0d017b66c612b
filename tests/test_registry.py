"""The MLflow adapter against a real SQLite-backed MLflow store (no engine needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrelease.errors import InputError, PromotionConflict
from llmrelease.mlflow_registry import MlflowRegistry
from llmrelease.tasks.promotion.transaction import promote_version, rollback

APP = "unit-app"
TEMPLATE = [{"role": "user", "content": "Q: {{ q }}"}]


@pytest.fixture
def reg(tmp_path: Path) -> MlflowRegistry:
    return MlflowRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=(tmp_path / "art").as_uri())


def candidate(reg: MlflowRegistry, key: str, prompt_version: int = 1):
    return reg.ensure_model_version(
        APP, candidate_key=key, prompt_version=prompt_version, params={"p": "1"}, tags={}
    )


def test_prompt_versions_are_found_by_content_hash(reg: MlflowRegistry) -> None:
    assert reg.ensure_prompt_version(APP, TEMPLATE, content_hash="h1", commit_message="m", tags={}) == (
        1,
        True,
    )
    assert reg.ensure_prompt_version(APP, TEMPLATE, content_hash="h1", commit_message="m", tags={}) == (
        1,
        False,
    )
    other = [{"role": "user", "content": "Question: {{ q }}"}]
    assert reg.ensure_prompt_version(APP, other, content_hash="h2", commit_message="m", tags={}) == (2, True)
    assert reg.load_prompt_template(APP, 2) == other


def test_model_versions_are_found_by_candidate_key(reg: MlflowRegistry) -> None:
    reg.ensure_prompt_version(APP, TEMPLATE, content_hash="h1", commit_message="m", tags={})
    v1, created = candidate(reg, "k1")
    assert (v1.version, created, v1.prompt_version) == ("1", True, 1)
    again, created = candidate(reg, "k1")
    assert (again.version, created) == ("1", False)
    assert candidate(reg, "k2")[0].version == "2"


def test_promote_moves_model_and_prompt_aliases_with_compare_and_set(reg: MlflowRegistry) -> None:
    reg.ensure_prompt_version(APP, TEMPLATE, content_hash="h1", commit_message="m", tags={})
    reg.ensure_prompt_version(APP, TEMPLATE + [], content_hash="h2", commit_message="m", tags={})
    v1, _ = candidate(reg, "k1", 1)
    v2, _ = candidate(reg, "k2", 2)
    promote_version(reg, APP, v1, expected_champion=None, run_id="r1")
    reg.set_challenger(APP, v2)
    with pytest.raises(PromotionConflict, match="moved from none to 1"):
        promote_version(reg, APP, v2, expected_champion=None, run_id="r2")
    assert reg.alias(APP, "champion").version == "1"
    promote_version(reg, APP, v2, expected_champion="1", run_id="r2")
    assert (reg.alias(APP, "champion").version, reg.alias(APP, "previous-champion").version) == ("2", "1")
    assert (reg.prompt_alias(APP, "champion"), reg.prompt_alias(APP, "previous-champion")) == (2, 1)
    assert reg.alias(APP, "challenger") is None and reg.prompt_alias(APP, "challenger") is None
    restored, demoted, _ = rollback(reg, APP)
    assert (restored.version, demoted.version) == ("1", "2")
    assert reg.prompt_alias(APP, "champion") == 1
    with pytest.raises(InputError, match="no previous-champion"):
        rollback(reg, APP)


def test_hand_registered_champion_fails_comparison_gates_closed(reg: MlflowRegistry, tmp_path: Path) -> None:
    from llmrelease.tasks.promotion.candidate import Candidate
    from llmrelease.tasks.release import champion_item_scores

    reg.ensure_prompt_version(APP, TEMPLATE, content_hash="h1", commit_message="m", tags={})
    v1, _ = candidate(reg, "k1")
    reg.client.set_registered_model_alias(APP, "champion", "1")  # set by a person, never evaluated
    champ = reg.alias(APP, "champion")
    cand = Candidate(APP, v1, False, 1, False, champ, {"e": "d"}, "sha")
    items, note = champion_item_scores(reg, None, [], cand)  # type: ignore[arg-type]
    assert items == {} and "no llmrelease evaluation run" in note


def test_rollback_without_champion_is_an_input_error(reg: MlflowRegistry) -> None:
    with pytest.raises(InputError, match="nothing registered"):
        rollback(reg, APP)
    reg.ensure_prompt_version(APP, TEMPLATE, content_hash="h1", commit_message="m", tags={})
    candidate(reg, "k1")
    with pytest.raises(InputError, match="no champion"):
        rollback(reg, APP)
