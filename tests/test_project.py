"""Loading an app from a project directory: lookups list what exists, cross-checks name the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrelease.errors import SpecError, UnknownNameError
from llmrelease.project import git_commit, list_apps, load_app


def test_demo_app_loads_with_its_metrics(project: Path) -> None:
    spec = load_app(project, "support-triage")
    assert spec.prompt.variables == ["ticket"]
    assert "tickets.category_accuracy" in spec.metric_names
    assert [e.name for e in spec.evalsets] == ["redteam", "tickets"]


def test_unknown_app_lists_available_apps(project: Path) -> None:
    with pytest.raises(UnknownNameError, match="unknown app 'suport-triage'; available: support-triage"):
        load_app(project, "suport-triage")


def test_gate_on_unknown_metric_names_the_line(project: Path) -> None:
    gates = project / "registry/support-triage/gates.yaml"
    gates.write_text(gates.read_text().replace("metric: tickets.json_parses", "metric: tickets.json_parse"))
    with pytest.raises(
        SpecError, match="unknown metric 'tickets.json_parse'; did you mean 'tickets.json_parses'"
    ) as info:
        load_app(project, "support-triage")
    assert info.value.field == "gates[1].metric"
    assert info.value.line is not None
    assert "metric: tickets.json_parse" in gates.read_text().splitlines()[info.value.line - 1]
    # Per-category guard metrics are folded in the listing, not spelled out 14 times.
    assert "tickets.guard_response_unsafe.<category>" in str(info.value)
    assert "tickets.guard_response_unsafe.S7" not in str(info.value)


def test_evalset_without_card_is_an_error(project: Path) -> None:
    (project / "evalsets/support-triage/tickets.card.yaml").unlink()
    with pytest.raises(SpecError, match="evalset has no card"):
        load_app(project, "support-triage")


def test_app_without_evalsets_is_an_error(project: Path) -> None:
    for f in (project / "evalsets/support-triage").iterdir():
        f.unlink()
    with pytest.raises(SpecError, match="no evalsets for this app"):
        load_app(project, "support-triage")


def test_list_apps_and_git_commit(project: Path, tmp_path: Path) -> None:
    assert list_apps(project) == ["support-triage"]
    sha = git_commit(project)
    assert len(sha) == 40
    (project / "registry/support-triage/prompt.yaml").write_text("version: x\n")
    assert git_commit(project) == sha + "+dirty"
    assert git_commit(tmp_path / "nowhere") == "unknown"


def test_every_bundled_spec_is_valid() -> None:
    from llmrelease.specfile import load_spec
    from llmrelease.specs import ModelSpec, PromptSpec

    repo = Path(__file__).resolve().parent.parent
    for path in (repo / "examples").rglob("*.prompt.yaml"):
        load_spec(path, PromptSpec)
    for path in (repo / "examples").rglob("model*.yaml"):
        load_spec(path, ModelSpec)
    assert load_app(repo, "support-triage").gates.gates


def test_app_missing_a_spec_file_names_it(project: Path) -> None:
    (project / "registry/support-triage/gates.yaml").unlink()
    with pytest.raises(SpecError, match="file not found") as info:
        load_app(project, "support-triage")
    assert info.value.file.endswith("registry/support-triage/gates.yaml")
    assert "model.yaml" in str(info.value)


def test_response_model_by_import_path_becomes_the_schema(project: Path) -> None:
    (project / "triage_schema.py").write_text(
        "from typing import Literal\nfrom pydantic import BaseModel\n\n"
        "class Triage(BaseModel):\n"
        "    category: Literal['billing', 'technical', 'account', 'shipping']\n"
        "    urgency: Literal['low', 'medium', 'high']\n"
    )
    model = project / "registry/support-triage/model.yaml"
    text = model.read_text()
    head, _, rest = text.partition("response_schema:")
    rest = rest[rest.index("pricing:") :]
    model.write_text(head + "response_model: triage_schema:Triage\n" + rest)
    spec = load_app(project, "support-triage")
    schema = spec.model.response_schema
    assert schema["properties"]["category"]["enum"] == ["billing", "technical", "account", "shipping"]
    assert spec.model.response_model is None  # resolved: the schema is the identity from here on
    assert "tickets.schema_conforms" in spec.metric_names

    model.write_text(head + "response_model: triage_schema:Missing\n" + rest)
    with pytest.raises(SpecError, match="cannot import 'triage_schema:Missing'") as info:
        load_app(project, "support-triage")
    assert info.value.field == "response_model"
    assert model.read_text().splitlines()[info.value.line - 1].startswith("response_model:")


def test_schema_and_model_together_is_an_error(project: Path) -> None:
    model = project / "registry/support-triage/model.yaml"
    model.write_text(model.read_text() + "response_model: x:Y\n")
    with pytest.raises(SpecError, match="not both"):
        load_app(project, "support-triage")


def test_quality_card_without_scorers_is_an_error(project: Path) -> None:
    card = project / "evalsets/support-triage/tickets.card.yaml"
    card.write_text(card.read_text().split("scorers:")[0])
    with pytest.raises(SpecError, match="needs at least one scorer"):
        load_app(project, "support-triage")
