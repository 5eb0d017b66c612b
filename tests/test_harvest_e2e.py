"""`llmrelease harvest` on the demo's real release history (tests/conftest.py `demo_history`: real
vLLM, MLflow on SQLite, Prefect): the champion history the releases recorded attributes the demo
log's feedback, the snapshots rebuild byte for byte, and the harvest run holds them as datasets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmrelease.cli import app
from llmrelease.mlflow_registry import MlflowRegistry
from llmrelease.tasks.promotion.champion_history import champion_history
from tests.test_feedback_harvest import PLANTED

pytestmark = pytest.mark.e2e
APP = "support-triage"


def test_harvest_attributes_the_demo_feedback_to_released_versions(demo_history, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(demo_history.project, project)
    registry = MlflowRegistry(f"sqlite:///{project / '.llmrelease' / 'mlflow.db'}")

    # What the releases recorded: the baseline (v1, prompt v1) and then the few-shot prompt (v2,
    # prompt v2) became champion; the rejected v3 never did. The demo log names the same versions.
    events = champion_history(registry, APP)
    assert [(e.version, e.prompt_version, e.op) for e in events] == [("1", 1, "promote"), ("2", 2, "promote")]
    assert events[0].at <= events[1].at

    runner = CliRunner()
    first = runner.invoke(app, ["harvest", APP, "--project", str(project), "--json"], catch_exceptions=False)
    assert first.exit_code == 0, first.stderr
    out = json.loads(first.stdout)
    s = out["summary"]
    assert s["attributed"]["share"] >= 0.95, s["unattributed"]
    assert [u["id"] for u in s["unattributed"]] == ["req-0046"]
    files = {kind: Path(p) for kind, p in out["files"].items()}
    assert all(p.parent == project / "harvests" / APP for p in files.values())
    everything = b"".join(p.read_bytes() for p in files.values())
    for planted in PLANTED:
        assert planted.encode() not in everything, planted

    again = runner.invoke(app, ["harvest", APP, "--project", str(project), "--json"], catch_exceptions=False)
    assert again.exit_code == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["files"] == out["files"]  # content-addressed: same inputs, same names, same bytes
    assert b"".join(Path(p).read_bytes() for p in second["files"].values()) == everything

    run = registry.client.get_run(out["run_id"])
    names = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert names == {files[k].name for k in ("regression", "sft", "preference")}
    assert run.data.tags["llmrelease.kind"] == "harvest"
    assert run.data.metrics["harvest.attributed_share"] >= 0.95
    logged = {a.path for a in registry.client.list_artifacts(out["run_id"], "harvest")}
    assert logged == {f"harvest/{files['summary'].name}", f"harvest/{files['card'].name}"}

    plain = runner.invoke(app, ["harvest", APP, "--project", str(project)], catch_exceptions=False)
    assert plain.exit_code == 0
    assert "v2/prompt v2" in plain.stdout and "req-0046" in plain.stdout
    assert f"evalsets/{APP}/" in plain.stdout
