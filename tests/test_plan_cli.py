"""``llmrelease plan`` through the CLI, on a champion released for real (Prefect in-process, MLflow
on SQLite) with the zero-cost engine: the plan needs recorded per-item scores, not a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench._project import make_champion
from llmrelease.cli import app
from tests.conftest import copy_project

pytestmark = pytest.mark.flow

APP = "support-triage"
runner = CliRunner()


def plan(project: Path, *extra: str):
    result = runner.invoke(app, ["plan", APP, "-p", str(project), "--json", *extra])
    return result.exit_code, json.loads(result.stdout)


def test_plan_sizes_every_comparison_gate_from_the_champions_scores(tmp_path: Path, monkeypatch) -> None:
    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    monkeypatch.setenv("LLMRELEASE_ENGINE_FACTORY", "llmrelease.engines.instant:instant_engine")
    monkeypatch.setenv("LLMRELEASE_NO_LIFELINE", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    # No store yet: nothing to read from; exit 2 with the fix.
    code, out = plan(project)
    assert code == 2 and "release the app first" in out["error"]["fix"]

    first = runner.invoke(app, ["release", APP, "-p", str(project), "--json"])
    make_champion(project, json.loads(first.stdout))

    code, out = plan(project)
    # The guard's comparison gate went with the guard; the accuracy floor is on its lower bound.
    gate, floor = out["gates"]
    assert gate["gate"] == "category-accuracy-vs-champion" and gate["n_now"] == 72
    # The zero-cost engine answers "billing" everywhere: right on 18 of 72, so the scores vary and no
    # earlier comparison was observed: the conservative no-correlation spread.
    assert gate["sd_source"].startswith("assumed") and gate["sd"] == pytest.approx(2**0.5 * 0.4361, abs=1e-3)
    assert not gate["enough"] and gate["items_needed"] > 72 and gate["mde_now"] > 0.05
    assert code == 1 and out["exit_code"] == 1
    assert out["cost_per_item"] > 0 and gate["cost_needed"] == pytest.approx(
        out["cost_per_item"] * gate["items_needed"]
    )

    # The floor (0.2) is 0.05 below the champion's 0.25: 72 items cannot show that either.
    assert floor["gate"] == "category-accuracy-floor" and floor["margin"] == pytest.approx(0.05)
    assert floor["sd_source"].startswith("bound gate") and not floor["enough"] and floor["items_needed"] > 72

    code, wide = plan(project, "--margin", "0.5", "--power", "0.9")  # --margin is for comparisons
    assert wide["gates"][0]["enough"] and wide["gates"][0]["power"] == 0.9
    assert not wide["gates"][1]["enough"] and code == 1

    shown = runner.invoke(app, ["plan", APP, "-p", str(project)])
    assert "too small" in shown.stdout and "category-accuracy-vs-champion" in shown.stdout

    code, out = plan(project, "--margin", "0")
    assert code == 2 and "--margin" in out["error"]["message"]
