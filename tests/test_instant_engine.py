"""The zero-cost engine and the engine-factory switch: everything except generation, for real
(Prefect in-process, MLflow on SQLite), in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from llmrelease.engines.instant import example_for_schema
from llmrelease.errors import InputError
from llmrelease.tasks.evaluation import default_engine_factory, load_engine
from tests.conftest import copy_project

SCHEMA = json.loads(
    '{"type":"object","properties":{"category":{"type":"string","enum":["billing","technical"]},'
    '"urgency":{"type":"string","enum":["low","high"]},"n":{"type":"integer","minimum":3}},'
    '"required":["category","urgency"],"additionalProperties":false}'
)


def test_example_satisfies_the_schema() -> None:
    value = example_for_schema(SCHEMA)
    jsonschema.validate(value, SCHEMA)
    assert value["category"] == "billing"


def test_engine_factory_switch(monkeypatch) -> None:
    monkeypatch.delenv("LLMRELEASE_ENGINE_FACTORY", raising=False)
    assert default_engine_factory() is load_engine
    monkeypatch.setenv("LLMRELEASE_ENGINE_FACTORY", "llmrelease.engines.instant:instant_engine")
    assert default_engine_factory().__name__ == "instant_engine"
    monkeypatch.setenv("LLMRELEASE_ENGINE_FACTORY", "llmrelease.engines.instant:nope")
    with pytest.raises(InputError, match="cannot be imported"):
        default_engine_factory()


@pytest.mark.e2e
def test_release_flow_with_the_zero_cost_engine(tmp_path: Path, monkeypatch) -> None:
    from llmrelease.flows.release import release_flow

    project = copy_project(tmp_path / "project", guard=False, shadow=False)  # zero-cost: no guard, no server
    monkeypatch.setenv("LLMRELEASE_ENGINE_FACTORY", "llmrelease.engines.instant:instant_engine")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = release_flow(app="support-triage", project_dir=str(project))
    assert out["metrics"]["tickets.schema_conforms"] == 1.0
    assert out["metrics"]["tickets.category_accuracy"] == pytest.approx(0.25)  # always "billing"
    # 0.25 is the always-one-class rate: the floor gate (0.26) rejects it, and everything is recorded.
    assert out["status"] == "rejected"
    assert {g["name"] for g in out["report"]["gates"] if g["verdict"] == "fail"} == {
        "category-accuracy-floor"
    }
    assert out["run_id"] and (project / ".llmrelease" / "mlflow.db").exists()


@pytest.mark.e2e
def test_release_at_an_older_commit_reads_that_commit_and_leaves_the_checkout(
    tmp_path: Path, monkeypatch
) -> None:
    """release_flow(git_commit=...) evaluates the specs as of that commit (from a temporary
    worktree), records that commit, and leaves the checkout and its edits alone."""
    from llmrelease.flows.release import release_flow
    from llmrelease.mlflow_registry import MlflowRegistry
    from tests.conftest import git

    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    monkeypatch.setenv("LLMRELEASE_ENGINE_FACTORY", "llmrelease.engines.instant:instant_engine")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    old = git(project, "rev-parse", "HEAD")
    prompt = project / "registry" / "support-triage" / "prompt.yaml"
    prompt.write_text(prompt.read_text().replace("{{ ticket }}", "Newer: {{ ticket }}"))
    git(project, "commit", "-qam", "newer prompt")
    edited = prompt.read_text()

    at_old = release_flow(app="support-triage", project_dir=str(project), git_commit=old)
    registry = MlflowRegistry(f"sqlite:///{project / '.llmrelease' / 'mlflow.db'}")
    [version] = registry.versions("support-triage")
    assert version.tags["llmrelease.git_commit"] == old
    old_template = registry.load_prompt_template("support-triage", version.prompt_version)
    assert "Newer:" not in json.dumps(old_template)
    assert git(project, "rev-parse", "HEAD") != old and prompt.read_text() == edited
    assert "worktree" not in git(project, "worktree", "list").split("\n", 1)[-1]

    at_head = release_flow(app="support-triage", project_dir=str(project))
    assert at_head["candidate_version"] != at_old["candidate_version"]
    challenger = registry.alias("support-triage", "challenger")
    assert "Newer:" in json.dumps(registry.load_prompt_template("support-triage", challenger.prompt_version))
