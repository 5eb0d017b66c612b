"""``statistics.sequential`` through the real release flow (Prefect in-process, MLflow on SQLite)
with the zero-cost engine: the stream stops once the watched gate is decided, and the run says
how many items it used and how much generation it saved. The real-model version is in
test_release_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bench._project import make_champion
from llmrelease.cli import app
from llmrelease.mlflow_registry import MlflowRegistry
from tests.conftest import copy_project, read_yaml

pytestmark = pytest.mark.flow

APP = "support-triage"
runner = CliRunner()


def test_a_sequential_release_stops_generating_once_its_gate_is_decided(tmp_path: Path, monkeypatch) -> None:
    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    gates = project / "registry" / APP / "gates.yaml"
    policy = read_yaml(gates)
    policy["statistics"]["sequential"] = True
    for g in policy["gates"]:
        if g["name"] == "category-accuracy-vs-champion":
            g["max_regression"] = 0.2  # identical outputs decide a 0.2 margin within 72 items
        if g["name"] == "category-accuracy-floor":
            g["min"] = 0.0
    gates.write_text(yaml.safe_dump(policy, sort_keys=False))
    monkeypatch.setenv("LLMRELEASE_ENGINE_FACTORY", "llmrelease.engines.instant:instant_engine")
    monkeypatch.setenv("LLMRELEASE_NO_LIFELINE", "1")
    monkeypatch.setenv("LLMRELEASE_CHUNK_ROWS", "8")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    first = runner.invoke(app, ["release", APP, "-p", str(project), "--json"])
    make_champion(project, json.loads(first.stdout))
    assert "sequential.items_used" not in json.loads(first.stdout)["metrics"]  # no champion: nothing watched

    prompt = project / "registry" / APP / "prompt.yaml"
    prompt.write_text(prompt.read_text().replace("{{ ticket }}", "Ticket: {{ ticket }}"))
    result = runner.invoke(app, ["release", APP, "-p", str(project), "--json"])
    out = json.loads(result.stdout)
    assert "metrics" in out, out
    m = out["metrics"]
    assert m["sequential.items_total"] == 72 and 8 <= m["sequential.items_used"] < 72
    assert m["sequential.time_saved_s"] > 0 and m["serving.items"] == m["sequential.items_used"]
    gate = next(g for g in out["report"]["gates"] if g["name"] == "category-accuracy-vs-champion")
    assert gate["verdict"] == "pass" and "Pocock alpha spending" in gate["method"]
    assert gate["n"] == m["sequential.items_used"] and gate["bound"] > -0.2
    assert out["report"]["statistics"]["watched_gates"] == ["category-accuracy-vs-champion"]

    registry = MlflowRegistry(f"sqlite:///{project / '.llmrelease' / 'mlflow.db'}")
    logged = registry.client.get_run(out["run_id"]).data.metrics
    assert logged["sequential.items_used"] == m["sequential.items_used"]
    table = registry.load_artifact_dict(out["run_id"], "eval/items.json")
    assert len(table["data"]) == m["sequential.items_used"]  # the rows generated, no more
