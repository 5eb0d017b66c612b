"""The exit-code contract after registration: 0 promoted, 1 gate failed, 2 invalid input (or a
rolled-back candidate), 3 champion moved, 4 infrastructure; one line of cause, a JSON object with
--json, and the registry left consistent."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmrelease.cli import app
from llmrelease.errors import RolledBackRefused
from llmrelease.mlflow_registry import CHAMPION, PREVIOUS, TAG, MlflowRegistry
from tests.conftest import copy_project
from tests.fault_worker import APP, prompt_variant, release_once

runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_tracking_server_exits_4_with_one_line_and_a_json_object(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    uri = f"http://alice:s3cret@127.0.0.1:{_free_port()}"
    result = runner.invoke(app, ["release", APP, "-p", str(project), "--tracking-uri", uri, "--json"])
    assert result.exit_code == 4, result.output
    payload = json.loads(result.stdout)
    assert payload["status"] == "error" and payload["exit_code"] == 4
    assert payload["error"]["kind"] == "infrastructure"
    assert "did not answer" in payload["error"]["message"]
    assert "s3cret" not in result.output and "Traceback" not in result.output
    assert not (project / ".llmrelease").exists()  # nothing was written anywhere


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, str, MlflowRegistry]:
    """A project whose champion is v2 and previous-champion v1 (promoted by llmrelease's own code)."""
    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    uri = f"sqlite:///{project / '.llmrelease' / 'mlflow.db'}"
    (project / ".llmrelease").mkdir()
    assert release_once(project, uri) == 0
    prompt_variant(project, project / "registry" / APP / "prompt.yaml", "v2")
    assert release_once(project, uri) == 0
    return project, uri, MlflowRegistry(uri)


def test_a_rolled_back_version_is_not_released_again_unless_asked(store) -> None:
    import dataclasses

    from llmrelease.plan import build_plan
    from llmrelease.tasks.promotion.candidate import register_candidate

    project, uri, registry = store
    result = runner.invoke(app, ["rollback", APP, "-p", str(project), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["champion"] == "1"
    assert registry.alias(APP, CHAMPION).version == "1" and registry.alias(APP, PREVIOUS) is None
    assert registry.prompt_alias(APP, CHAMPION) == 1
    assert TAG + "rolled_back_at" in registry.versions(APP)[1].tags

    # Re-running the same release (v2's specs are still the files) is refused, nothing moves.
    plan = dataclasses.replace(build_plan(project, APP, with_traffic=False), engine_factory="vllm")
    with pytest.raises(RolledBackRefused, match="v2, which was rolled back") as refused:
        register_candidate(registry, plan)
    assert refused.value.exit_code == 2 and "--allow-rolled-back" in str(refused.value)
    assert registry.alias(APP, "challenger") is None

    candidate = register_candidate(registry, plan, allow_rolled_back=True)
    assert candidate.version.version == "2"
    assert any("released again (--allow-rolled-back)" in n for n in candidate.notes)
    assert TAG + "rereleased_after_rollback_at" in registry.versions(APP)[1].tags


def test_status_says_when_model_and_prompt_aliases_disagree(store) -> None:
    project, _, registry = store
    registry.set_prompt_alias(APP, CHAMPION, 1)  # as a person in the UI, or a crashed old release
    result = runner.invoke(app, ["status", APP, "-p", str(project), "--json"])
    assert result.exit_code == 1, result.output
    st = json.loads(result.stdout)
    [row] = [r for r in st["aliases"] if r["alias"] == CHAMPION]
    assert (row["version"], row["prompt_version"], row["prompt_alias_version"]) == ("2", 2, 1)
    assert row["agrees"] is False
    assert "prompt's 'champion' alias is on 1" in st["disagreements"][0]
    shown = runner.invoke(app, ["status", APP, "-p", str(project)])
    assert shown.exit_code == 1 and "ALIASES DISAGREE" in shown.output


def test_status_and_rollback_never_create_a_store_and_name_unknown_apps(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    result = runner.invoke(app, ["status", APP, "-p", str(project), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["versions"] == 0
    assert not (project / ".llmrelease").exists()

    for command in ("status", "rollback"):
        result = runner.invoke(app, [command, "no-such-app", "-p", str(project), "--json"])
        assert result.exit_code == 2, result.output
        err = json.loads(result.stdout)["error"]
        assert err["kind"] == "input" and "unknown app 'no-such-app'" in err["message"]
        assert APP in err["message"]  # what exists
    result = runner.invoke(app, ["rollback", APP, "-p", str(project)])
    assert result.exit_code == 2 and "never been released" in result.output
    assert not (project / ".llmrelease").exists()


@pytest.mark.flow
def test_a_champion_whose_artifacts_were_deleted_exits_4_with_the_cause(store) -> None:
    import shutil

    project, uri, registry = store
    champion = registry.alias(APP, CHAMPION)
    run = registry.client.get_run(champion.eval_run_id)
    shutil.rmtree(Path(run.info.artifact_uri.removeprefix("file://")))
    prompt_variant(project, project / "registry" / APP / "prompt.yaml", "v3")
    env = {
        **os.environ,
        "LLMRELEASE_ENGINE_FACTORY": "llmrelease.engines.instant:instant_engine",
        "MLFLOW_TRACKING_URI": uri,
    }
    cli = [sys.executable, "-m", "llmrelease.cli", "release", APP, "-p", str(project), "--json"]
    result = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 4, result.stderr[-3000:]
    err = json.loads(result.stdout)["error"]
    assert err["kind"] == "infrastructure"
    assert f"of run {champion.eval_run_id} cannot be read" in err["message"]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "error (infrastructure): " in result.stderr
    assert registry.alias(APP, CHAMPION).version == champion.version
    assert registry.read_intent(APP) is None


def test_command_line_mistakes_are_input_errors_with_json_too(tmp_path: Path) -> None:
    """Errors the argument parser finds (before any llmrelease code runs) keep the contract too."""
    cli = [sys.executable, "-m", "llmrelease.cli", "release", APP, "-p", str(tmp_path / "nowhere"), "--json"]
    result = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["field"] == "--project" and "does not exist" in error["message"]
    assert "Traceback" not in result.stderr
    helped = subprocess.run(cli[:3] + ["--help"], capture_output=True, timeout=120)
    assert helped.returncode == 0


@pytest.mark.flow
def test_allow_rolled_back_reaches_the_release_flow_and_is_recorded(tmp_path: Path, monkeypatch) -> None:
    """The flag's whole path: CLI -> api -> Prefect flow -> registration -> outcome and run."""
    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    monkeypatch.setenv("LLMRELEASE_ENGINE_FACTORY", "llmrelease.engines.instant:instant_engine")
    monkeypatch.setenv("LLMRELEASE_NO_LIFELINE", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    release = ["release", APP, "-p", str(project), "--json"]
    first = runner.invoke(app, release)
    assert first.exit_code in (0, 1, 5), first.output  # a test engine's verdict promotes nothing anyway
    registry = MlflowRegistry(f"sqlite:///{project / '.llmrelease' / 'mlflow.db'}")
    [version] = registry.versions(APP)
    registry.set_version_tags(APP, version.version, {TAG + "rolled_back_at": "2026-11-30T00:00:00+00:00"})

    refused = runner.invoke(app, release)
    assert refused.exit_code == 2, refused.output
    error = json.loads(refused.stdout)["error"]
    assert "rolled back at 2026-11-30" in error["message"] and "--allow-rolled-back" in error["fix"]

    allowed = runner.invoke(app, [*release, "--allow-rolled-back"])
    assert allowed.exit_code in (0, 1, 5), allowed.output
    outcome = json.loads(allowed.stdout)
    assert any("released again (--allow-rolled-back)" in n for n in outcome["notes"])
    run_tags = registry.run_tags(outcome["run_id"])
    assert "released again" in run_tags[TAG + "registration_notes"]
    assert TAG + "rereleased_after_rollback_at" in registry.versions(APP)[0].tags
