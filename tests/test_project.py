"""Loading an app from a project directory: lookups list what exists, cross-checks name the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrelease.errors import InputError, SpecError, UnknownNameError
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


# ------------------------------------------------------------------------------- symbolic links


def test_symlinks_that_stay_inside_the_project_are_fine(project: Path) -> None:
    evs = project / "evalsets/support-triage"
    (project / "data").mkdir()
    (evs / "tickets.jsonl").rename(project / "data/tickets.jsonl")
    (evs / "tickets.jsonl").symlink_to(project / "data/tickets.jsonl")
    (evs / "tickets.card.yaml").rename(project / "data/card.yaml")
    (evs / "tickets.card.yaml").symlink_to("../../data/card.yaml")  # relative
    spec = load_app(project, "support-triage")
    assert [e.name for e in spec.evalsets] == ["redteam", "tickets"]


@pytest.mark.parametrize(
    "rel",
    [
        "registry/support-triage",
        "registry/support-triage/model.yaml",
        "registry/support-triage/shadow.yaml",
        "evalsets/support-triage",
        "evalsets/support-triage/tickets.jsonl",
        "evalsets/support-triage/redteam.card.yaml",
    ],
)
def test_a_symlink_out_of_the_project_is_refused(project: Path, tmp_path: Path, rel: str) -> None:
    src = project / rel
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    dest = outside / src.name
    src.rename(dest)
    src.symlink_to(dest, target_is_directory=dest.is_dir())
    with pytest.raises(InputError, match=f"is a symbolic link to {dest}, outside the project") as info:
        load_app(project, "support-triage")
    assert info.value.file == str(src)


def test_explicit_prompt_and_model_files_may_live_anywhere(project: Path, tmp_path: Path) -> None:
    """--prompt/--model are the user's explicit choice, links included."""
    outside = tmp_path / "experiments"
    outside.mkdir()
    (outside / "real.yaml").write_text((project / "examples/support-triage/baseline.prompt.yaml").read_text())
    (outside / "prompt.yaml").symlink_to(outside / "real.yaml")
    spec = load_app(project, "support-triage", prompt_file=outside / "prompt.yaml")
    assert spec.prompt_path == (outside / "real.yaml").resolve()


def test_a_traffic_log_linked_out_of_the_project_names_shadow_yaml(project: Path, tmp_path: Path) -> None:
    log = project / "examples/support-triage/traffic.jsonl"
    log.rename(tmp_path / "traffic.jsonl")
    log.symlink_to(tmp_path / "traffic.jsonl")
    with pytest.raises(SpecError, match="symbolic link") as info:
        load_app(project, "support-triage")
    shadow = project / "registry/support-triage/shadow.yaml"
    assert (info.value.file, info.value.field) == (str(shadow), "traffic.source")
    assert shadow.read_text().splitlines()[info.value.line - 1].strip().startswith("source:")


def test_a_directory_where_an_optional_spec_belongs_is_not_an_absent_spec(project: Path) -> None:
    guard = project / "registry/support-triage/guard.yaml"
    guard.unlink()
    guard.mkdir()
    with pytest.raises(SpecError, match="is a directory"):
        load_app(project, "support-triage")


# ------------------------------------------------------------------------------ response_model


def _use_model(project: Path, target: str, module: str | None = None) -> Path:
    if module is not None:
        (project / "triage_schema.py").write_text(module)
    model = project / "registry/support-triage/model.yaml"
    text = model.read_text()
    head, _, rest = text.partition("response_schema:")
    model.write_text(head + f"response_model: {target}\n" + rest[rest.index("pricing:") :])
    return model


@pytest.mark.parametrize(
    ("module", "target", "match"),
    [
        (
            "raise RuntimeError('needs the database')\n",
            "triage_schema:T",
            "raised RuntimeError: needs the database",
        ),
        ("class T(:\n    pass\n", "triage_schema:T", r"raised SyntaxError: .*triage_schema.py, line 1"),
        ("import not_installed_dep\n", "triage_schema:T", "raised ModuleNotFoundError: No module named"),
        ("import sys\nsys.exit(1)\n", "triage_schema:T", "raised SystemExit"),
        (None, "no_such_module:T", "no module named 'no_such_module'"),
        ("T = 3\n", "triage_schema:T", "not a pydantic model class .*got int"),
        ("class T:\n    pass\n", "triage_schema:T", "not a pydantic model class"),
        ("x = 1\n", "triage_schema:T", "has no attribute 'T'"),
    ],
)
def test_a_response_model_that_cannot_be_used_names_file_line_and_cause(
    project: Path, module: str | None, target: str, match: str
) -> None:
    model = _use_model(project, target, module)
    with pytest.raises(SpecError, match=match) as info:
        load_app(project, "support-triage")
    assert (info.value.file, info.value.field) == (str(model.resolve()), "response_model")
    assert model.read_text().splitlines()[info.value.line - 1].startswith("response_model:")
    assert "\n" not in info.value.reason


def test_a_response_model_is_imported_afresh_on_each_load(project: Path) -> None:
    """The module is forgotten after its schema is read: an edit is seen by the next load, and
    another project's module of the same name is not reused."""
    schema = "from pydantic import BaseModel\n\nclass T(BaseModel):\n    {}: str\n"
    _use_model(project, "triage_schema:T", schema.format("category"))
    assert load_app(project, "support-triage").model.response_schema["required"] == ["category"]
    (project / "triage_schema.py").write_text(schema.format("label"))
    assert load_app(project, "support-triage").model.response_schema["required"] == ["label"]


def test_a_response_model_module_linked_out_of_the_project_is_refused(project: Path, tmp_path: Path) -> None:
    (tmp_path / "real_schema.py").write_text(
        "from pydantic import BaseModel\n\nclass T(BaseModel):\n    a: str\n"
    )
    (project / "triage_schema.py").symlink_to(tmp_path / "real_schema.py")
    _use_model(project, "triage_schema:T")
    with pytest.raises(SpecError, match="symbolic link to .*real_schema.py, outside the project") as info:
        load_app(project, "support-triage")
    assert info.value.field == "response_model"
