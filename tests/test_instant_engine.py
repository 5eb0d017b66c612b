"""The zero-cost engine and the engine-factory switch: everything except generation, for real
(Prefect in-process, MLflow on SQLite), in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from llmrelease.engines.instant import example_for_schema
from llmrelease.errors import InputError
from llmrelease.tasks.evaluation.step import default_engine_factory, load_engine
from tests.conftest import copy_project, read_yaml

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


TEST_ENGINE = "llmrelease.engines.instant:instant_engine"


def _edit_yaml(path: Path, edit) -> None:
    import yaml

    data = read_yaml(path)
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.flow
def test_a_test_engine_records_its_verdict_as_such_and_moves_no_alias(tmp_path: Path, monkeypatch) -> None:
    """The zero-cost engine's verdict says nothing about the model: it is recorded under its own
    candidate key, tagged with the factory, and no alias moves (not even challenger), whatever
    the gates said."""
    from llmrelease.flows.release import release_flow
    from llmrelease.mlflow_registry import TAG, MlflowRegistry
    from llmrelease.project import load_app
    from llmrelease.tasks.promotion.candidate import candidate_key

    project = copy_project(tmp_path / "project", guard=False, shadow=False)  # zero-cost: no guard, no server
    gates = project / "registry" / "support-triage" / "gates.yaml"
    # 0.25 (18 of 72) passes every gate now: its 95% lower bound is 0.18
    gates.write_text(gates.read_text().replace("min: 0.2", "min: 0.1"))
    monkeypatch.setenv("LLMRELEASE_ENGINE_FACTORY", TEST_ENGINE)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = release_flow(app="support-triage", project_dir=str(project))
    assert out["metrics"]["tickets.schema_conforms"] == 1.0
    assert out["metrics"]["tickets.category_accuracy"] == pytest.approx(0.25)  # always "billing"
    assert out["report"]["passed"] is True
    assert out["status"] == "test_engine" and out["exit_code"] == 0
    assert "test engine" in out["notes"][-1]

    registry = MlflowRegistry(f"sqlite:///{project / '.llmrelease' / 'mlflow.db'}")
    for alias in ("champion", "challenger", "previous-champion"):
        assert registry.alias("support-triage", alias) is None, alias
    [version] = registry.versions("support-triage")
    assert version.tags[TAG + "verdict"] == "test_engine"
    assert version.tags[TAG + "engine_factory"] == TEST_ENGINE
    spec = load_app(project, "support-triage")
    assert version.candidate_key != candidate_key(spec.model, spec.prompt)  # a real release is another
    manifest = registry.load_artifact_dict(out["run_id"], "manifest.json")
    assert manifest["engine"] == {"backend": "vllm", "factory": TEST_ENGINE}
    assert version.tags[TAG + "manifest_digest"] == registry.run_tags(out["run_id"])[TAG + "manifest_digest"]
    assert set(manifest["evalsets"]) == {"tickets"} and manifest["versions"]["mlflow"]

    # The failing floor still fails (even the upper bound, 0.34, is below it), with exit code 1, and
    # still moves nothing.
    gates.write_text(gates.read_text().replace("min: 0.1", "min: 0.5"))
    prompt = project / "registry" / "support-triage" / "prompt.yaml"
    prompt.write_text(prompt.read_text().replace("{{ ticket }}", "Ticket: {{ ticket }}"))
    out = release_flow(app="support-triage", project_dir=str(project))
    assert out["status"] == "test_engine" and out["exit_code"] == 1
    assert registry.alias("support-triage", "challenger") is None


@pytest.mark.flow
def test_champion_scores_are_measured_again_when_the_evalset_card_changed(
    tmp_path: Path, monkeypatch
) -> None:
    """A scorer added to the card (with a comparison gate on it) is measured on the champion too:
    its stored scores predate the scorer, so they are not reused ('no items in common' before)."""
    from llmrelease.flows.release import release_flow
    from llmrelease.mlflow_registry import MlflowRegistry
    from llmrelease.tasks.promotion.transaction import promote_version

    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    monkeypatch.setenv("LLMRELEASE_ENGINE_FACTORY", TEST_ENGINE)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = release_flow(app="support-triage", project_dir=str(project))
    registry = MlflowRegistry(f"sqlite:///{project / '.llmrelease' / 'mlflow.db'}")
    [v1] = registry.versions("support-triage")
    promote_version(registry, "support-triage", v1, expected_champion=None, run_id=first["run_id"])  # by hand

    card = project / "evalsets" / "support-triage" / "tickets.card.yaml"
    _edit_yaml(
        card,
        lambda c: c["scorers"].append({"name": "category_rouge", "kind": "rouge_l", "field": "category"}),
    )
    gate = {"name": "category-rouge-vs-champion", "metric": "tickets.category_rouge", "max_regression": 0.05}
    _edit_yaml(project / "registry" / "support-triage" / "gates.yaml", lambda g: g["gates"].append(gate))
    prompt = project / "registry" / "support-triage" / "prompt.yaml"
    prompt.write_text(prompt.read_text().replace("{{ ticket }}", "Ticket: {{ ticket }}"))
    out = release_flow(app="support-triage", project_dir=str(project))
    assert any(
        "re-evaluated champion v1 (evalset cards changed since its release)" in n for n in out["notes"]
    )
    gate = next(g for g in out["report"]["gates"] if g["name"] == "category-rouge-vs-champion")
    assert gate["n"] == 72 and gate["verdict"] == "pass" and gate["delta"] == 0.0

    # Unchanged inputs: the champion's scores are reused.
    prompt.write_text(prompt.read_text().replace("Ticket: {{ ticket }}", "Ticket now: {{ ticket }}"))
    out = release_flow(app="support-triage", project_dir=str(project))
    assert any(n.startswith("champion scores: re-evaluated") for n in out["notes"])  # v1's run predates it
    promote_version(
        registry, "support-triage", registry.versions("support-triage")[1], expected_champion="1", run_id="x"
    )
    prompt.write_text(prompt.read_text().replace("Ticket now: {{ ticket }}", "Ticket then: {{ ticket }}"))
    out = release_flow(app="support-triage", project_dir=str(project))
    assert any("champion scores: reused from run" in n for n in out["notes"]), out["notes"]


@pytest.mark.flow
def test_release_at_an_older_commit_reads_that_commit_and_leaves_the_checkout(
    tmp_path: Path, monkeypatch
) -> None:
    """release_flow(git_commit=...) evaluates the specs as of that commit (from a temporary
    worktree), records that commit, and leaves the checkout and its edits alone."""
    from llmrelease.flows.release import release_flow
    from llmrelease.mlflow_registry import MlflowRegistry
    from tests.conftest import git

    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    monkeypatch.setenv("LLMRELEASE_ENGINE_FACTORY", TEST_ENGINE)
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
    newest = registry.versions("support-triage")[-1]
    assert "Newer:" in json.dumps(registry.load_prompt_template("support-triage", newest.prompt_version))


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
    from llmrelease.tasks.evaluation.evalsets import load_evalsets
    from llmrelease.tasks.evaluation.step import evaluate

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


@pytest.mark.flow
def test_the_version_page_and_the_prefect_run_say_the_verdict(tmp_path: Path, monkeypatch) -> None:
    """The evidence is where people look: the model version's description (markdown on its MLflow
    page) holds the verdict and every gate; the Prefect run is named after app and candidate,
    carries the gate table as a markdown artifact, and its state is named after the verdict."""
    from prefect import get_client

    from llmrelease.flows.release import release_flow
    from llmrelease.mlflow_registry import TAG, MlflowRegistry
    from llmrelease.mlflow_traces import item_traces

    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    monkeypatch.setenv("LLMRELEASE_ENGINE_FACTORY", TEST_ENGINE)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    state = release_flow(app="support-triage", project_dir=str(project), return_state=True)
    out = state.result()
    assert (state.type.value, state.name) == ("COMPLETED", "TestEngine")  # not Failed, not Crashed

    registry = MlflowRegistry(f"sqlite:///{project / '.llmrelease' / 'mlflow.db'}")
    [version] = registry.versions("support-triage")
    page = registry.version_description("support-triage", version.version)
    # Always "billing": accuracy 0.25, its lower bound 0.18 under the 0.2 floor, its upper bound above.
    assert page.startswith("### llmrelease: gates INCONCLUSIVE (verdict: test_engine; never promoted)")
    for gate in out["report"]["gates"]:
        assert f"`{gate['name']}`" in page
    assert f"runs/{out['run_id']}/artifacts/release_report.html" in page
    html = Path(registry.client.download_artifacts(out["run_id"], "release_report.html", str(tmp_path)))
    page_html = html.read_text()
    assert "INCONCLUSIVE" in page_html and "category-accuracy-floor" in page_html and "<svg" in page_html
    assert "http://" not in page_html.replace("http://www.w3.org", "")  # self-contained: no CDN
    # Every item is an MLflow evaluation record (a trace with assessments) of the release run.
    traces = {t["id"]: t for t in item_traces(registry.tracking_uri, out["run_id"])}
    assert len(traces) == 72 and traces["t001"]["inputs"]["ticket"].startswith("Could you add")
    assert traces["t001"]["assessments"]["category_accuracy"] == 1.0  # always "billing": t001 is billing
    assert traces["t002"]["assessments"]["category_accuracy"] == 0.0  # ...t002 is account
    assert traces["t001"]["model_id"] == version.tags[TAG + "logged_model_id"]
    prompt = registry.client.get_prompt_version("support-triage-prompt", version.prompt_version)
    assert prompt.tags[TAG + "last_release"].startswith(f"model v{version.version}: test_engine")

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        assert run.name == f"support-triage v{version.version} (prompt v{version.prompt_version})"
        [artifact] = [a for a in client.read_artifacts() if a.flow_run_id == run.id]
    assert artifact.key == "support-triage-gates" and artifact.type == "markdown"
    assert "| `category-accuracy-floor` |" in artifact.data
