"""router.yaml: a router's routes, policy and gates, loaded and cross-checked with file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrelease.errors import SpecError
from llmrelease.router_app import load_router

APP = "support-triage"


def router_file(project: Path) -> Path:
    return project / "registry" / APP / "router.yaml"


def edit(project: Path, old: str, new: str) -> Path:
    path = router_file(project)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


def test_demo_router_loads_its_routes_as_variants_of_the_app(project: Path) -> None:
    router = load_router(project, APP)
    assert [r.name for r in router.routes] == ["zero-shot", "few-shot"]
    assert router.cheap.app.prompt.version == "minimal-v1"
    assert router.strong.app.prompt.version == router.app.prompt.version
    assert router.quality_evalset == "tickets"
    assert router.statistics == router.app.gates.stats


def test_app_without_router_says_how_to_add_one(project: Path) -> None:
    router_file(project).unlink()
    with pytest.raises(SpecError, match="this app has no router") as info:
        load_router(project, APP)
    assert "router.yaml" in (info.value.fix or "")


@pytest.mark.parametrize(
    ("old", "new", "match", "field"),
    [
        (
            "metric: router.apgr",
            "metric: router.apgrr",
            "unknown router metric 'router.apgrr'",
            "gates[0].metric",
        ),
        (
            "metric: router.cost_ratio\n    max: 0.7\n    on: upper_bound",
            "metric: router.cost_ratio\n    max_regression: 0.7",
            "applies to router.quality only",
            "gates[2].max_regression",
        ),
        ("quality: tickets.category_accuracy", "quality: tickets.category", "did you mean", "quality"),
        ("quality: tickets.category_accuracy", "quality: redteam.category_accuracy", "not", "quality"),
        (
            "prompt: prompt.yaml",
            "prompt: nowhere.yaml",
            "prompt spec .*nowhere.yaml not found",
            "routes[1].prompt",
        ),
        ("prompt: prompt.yaml", "prompt: ../../../outside.yaml", "outside the project", "routes[1].prompt"),
    ],
)
def test_bad_router_names_file_line_and_field(
    project: Path, old: str, new: str, match: str, field: str
) -> None:
    path = edit(project, old, new)
    with pytest.raises(SpecError, match=match) as info:
        load_router(project, APP)
    assert info.value.field == field
    assert Path(info.value.file) == path.resolve()
    assert info.value.line is not None
    assert field.rsplit(".", 1)[-1] + ":" in path.read_text().splitlines()[info.value.line - 1]


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("  target_strong_share: 0.3", "  threshold: -0.4\n  target_strong_share: 0.3", "exactly one of"),
        ("  target_strong_share: 0.3", "", "exactly one of"),
        ("  target_strong_share: 0.3", "  target_strong_share: 1.5", "less than 1"),
        ("  - name: few-shot", "  - name: zero-shot", "route names must be unique"),
        ("  band: 0.1", "  band: 0.1\n  stars: 5", "stars"),
    ],
)
def test_bad_policy_is_a_spec_error(project: Path, old: str, new: str, match: str) -> None:
    edit(project, old, new)
    with pytest.raises(SpecError, match=match):
        load_router(project, APP)


def test_route_model_without_token_prices_is_refused(project: Path) -> None:
    model = project / "registry" / APP / "model.yaml"
    text = model.read_text()
    model.write_text(text[: text.index("pricing:")])
    with pytest.raises(SpecError, match="no token prices") as info:
        load_router(project, APP)
    assert info.value.field == "routes[0].model"


def test_router_file_that_links_out_of_the_project_is_refused(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(router_file(project).read_text())
    router_file(project).unlink()
    router_file(project).symlink_to(outside)
    with pytest.raises(SpecError, match="symbolic link"):
        load_router(project, APP)


def test_route_command_refuses_a_bad_router_with_file_line_and_field(project: Path) -> None:
    import json

    from typer.testing import CliRunner

    from llmrelease.cli import app

    path = edit(project, "metric: router.cost_ratio", "metric: router.cost_ration")
    result = CliRunner().invoke(app, ["route", APP, "--project", str(project), "--json"])
    assert result.exit_code == 2, result.stdout
    error = json.loads(result.stdout)["error"]
    assert (Path(error["file"]), error["field"]) == (path.resolve(), "gates[2].metric")
    assert "did you mean 'router.cost_ratio'" in error["message"]
    assert "router.cost_ration" in path.read_text().splitlines()[error["line"] - 1]
    assert not (project / ".llmrelease").exists()  # nothing registered, no store opened


CASCADE_ONLY = (
    "  kind: cascade\n"
    "  confidence: mean_logprob                   # mean log-probability of the answer's tokens\n"
    "  escalate_on: [schema_failure]\n"
)


def test_classifier_policy_loads_and_a_policy_without_kind_is_a_cascade(project: Path) -> None:
    edit(project, CASCADE_ONLY, "  kind: classifier\n  algorithm: knn\n  neighbours: 3\n")
    policy = load_router(project, APP).spec.policy
    assert (policy.kind, policy.algorithm, policy.neighbours, policy.folds) == ("classifier", "knn", 3, 5)
    edit(project, "  kind: classifier\n  algorithm: knn\n  neighbours: 3\n", "")
    assert load_router(project, APP).spec.policy.kind == "cascade"


@pytest.mark.parametrize(
    ("new", "match", "field", "on_line"),
    [
        ("  kind: learned\n", "kind must be 'cascade' or 'classifier'", "policy", "kind: learned"),
        # a cascade's field under a classifier: the file's own field and line, without the union's tag
        (
            "  kind: classifier\n  confidence: mean_logprob\n",
            "unknown field",
            "policy.confidence",
            "confidence:",
        ),
        ("  kind: classifier\n  threshold: 1.5\n", "less than or equal to 1", "policy.threshold", "thresh"),
        ("  kind: classifier\n  folds: 1\n", "greater than or equal to 2", "policy.folds", "folds:"),
    ],
)
def test_bad_classifier_policy_names_the_files_own_field_and_line(
    project: Path, new: str, match: str, field: str, on_line: str
) -> None:
    path = edit(project, CASCADE_ONLY, new)
    with pytest.raises(SpecError, match=match) as info:
        load_router(project, APP)
    assert info.value.field == field
    assert on_line in path.read_text().splitlines()[info.value.line - 1]
