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


class _CountingEngine:
    """The zero-cost engine, remembering how many conversations each call got."""

    def __init__(self) -> None:
        from llmrelease.engines.instant import InstantEngine

        self.inner = InstantEngine()
        self.calls: list[int] = []

    def generate(self, conversations, sampling, **kwargs):
        self.calls.append(len(conversations))
        return self.inner.generate(conversations, sampling, **kwargs)


def test_evaluation_streams_chunks_and_matches_one_pass(tmp_path: Path, monkeypatch) -> None:
    """Chunked evaluation gives the same scores and records as one pass, and the engine never
    gets more than a chunk at once (what keeps memory flat as evalsets grow)."""
    from llmrelease.project import load_app
    from llmrelease.tasks.evalsets import load_evalsets
    from llmrelease.tasks.evaluation import evaluate

    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    spec = load_app(project, "support-triage")
    evalsets = load_evalsets(spec)

    def run(chunk: int):
        monkeypatch.setenv("LLMRELEASE_CHUNK_ROWS", str(chunk))
        engine = _CountingEngine()
        ev = evaluate(
            spec.model, spec.prompt, evalsets, project_root=project, engine_factory=lambda *a: (engine, {})
        )
        return ev, engine.calls

    whole, whole_calls = run(10_000)
    chunked, chunked_calls = run(5)
    assert whole_calls == [72]
    assert chunked_calls == [5] * 14 + [2]
    assert chunked.scores.items == whole.scores.items
    assert chunked.scores.aggregates == whole.scores.aggregates
    records = [r for c in chunked.items.chunks(1000) for r in c]
    assert records == [r for c in whole.items.chunks(1000) for r in c]
    assert [r["id"] for r in records] == [r.id for r in evalsets[0].rows()]
    assert chunked.metrics["serving.items"] == 72
    assert chunked.metrics["serving.output_tokens"] == whole.metrics["serving.output_tokens"]
