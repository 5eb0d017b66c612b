"""Shared fixtures. The vLLM engine is shared by the whole session through the engine cache in
``llmrelease.engines.vllm_offline`` (one start-up, ~40 s on CPU); each e2e module gets its own MLflow
store and its own copy of the demo project, committed to a throwaway Git repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    from llmrelease.runtime import configure

    configure(verbose=False)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("PREFECT_API_URL", None)
    # Module-scoped fixtures (which run releases before any test's own fixtures) checkpoint here,
    # not in the user's cache; each test gets its own directory (_own_checkpoints).
    os.environ["LLMRELEASE_CHECKPOINTS"] = tempfile.mkdtemp(prefix="llmrelease-checkpoints-")


_WATCHED = ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "LLMRELEASE_")
_SET_ONCE = {"LLMRELEASE_LIFELINE"}  # the lifeline's marker: exported by the first CLI call, for good


@pytest.fixture(autouse=True)
def _no_environment_leaks():
    """A test that changes where results go or which engine runs, and leaves it so, silently turns
    every later test into another one (a leaked test-engine factory once made every e2e release a
    test-engine release). monkeypatch undoes its own changes before this check runs."""
    before = {k: v for k, v in os.environ.items() if k.startswith(_WATCHED) and k not in _SET_ONCE}
    yield
    after = {k: v for k, v in os.environ.items() if k.startswith(_WATCHED) and k not in _SET_ONCE}
    assert after == before, f"the test left the environment changed: {before} -> {after}"


@pytest.fixture(scope="session")
def _session_generations(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared-generations")


@pytest.fixture(autouse=True)
def _own_checkpoints(
    _no_environment_leaks,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Generation checkpoints per test: a release one test killed must not be resumed by the next
    test's release of the same specs (it would read the outputs back and never start the engine).

    A test marked ``reuse_generations`` is about what happens around generation (promotion, crash
    safety, triggers, stores, exit codes), not generation itself: it shares one kept checkpoint
    directory with the other marked tests (``LLMRELEASE_KEEP_CHECKPOINTS``), so the demo's greedy
    outputs are generated once per session and read back after (same key, same outputs)."""
    if request.node.get_closest_marker("reuse_generations"):
        monkeypatch.setenv("LLMRELEASE_CHECKPOINTS", str(request.getfixturevalue("_session_generations")))
        monkeypatch.setenv("LLMRELEASE_KEEP_CHECKPOINTS", "1")
    else:
        monkeypatch.setenv("LLMRELEASE_CHECKPOINTS", str(tmp_path_factory.mktemp("checkpoints")))


@pytest.fixture(scope="session", autouse=True)
def _isolated_prefect_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))


@pytest.fixture(scope="session", autouse=True)
def _stop_engines_at_the_end():
    """The session shares one vLLM engine; stop its engine-core process when the session ends."""
    yield
    import sys

    if "llmrelease.engines.vllm_offline" in sys.modules:
        sys.modules["llmrelease.engines.vllm_offline"].clear_engines()
    if "llmrelease.engines.openai_server" in sys.modules:
        sys.modules["llmrelease.engines.openai_server"].stop_servers()
    if "llmrelease.engines.ray_backend" in sys.modules:
        sys.modules["llmrelease.engines.ray_backend"].shutdown()


def copy_project(dest: Path, *, guard: bool = True, shadow: bool = True) -> Path:
    """A copy of the demo project (registry/, evalsets/, examples/) as its own Git repository.

    ``guard=False`` removes the demo's guard, its red-team evalset and the gates on them; and
    ``shadow=False`` its shadow spec and gates: tests about something else skip ~30 s of stand-in
    guard classification per release, or an OpenAI server start-up, on CPU."""
    from bench._project import drop_guard, drop_shadow

    for part in ("registry", "evalsets", "examples"):
        shutil.copytree(REPO / part, dest / part)
    if not guard:
        drop_guard(dest)
    if not shadow:
        drop_shadow(dest)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "specs")
    return dest


def git(root: Path, *args: str) -> str:
    """Run git in ``root`` with a throwaway identity; its stdout, stripped."""
    cmd = ["git", "-C", str(root), "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch):
    """A real S3 API (moto's server on 127.0.0.1) and a boto3 client for it; the AWS variables
    point every boto3 client of the test (and MLflow's artifact store) at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for k, v in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": endpoint,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(k, v)
    try:
        yield boto3.client("s3")
    finally:
        server.stop()


def read_yaml(path: Path):
    """A spec file's data as llmrelease reads it (YAML 1.2 booleans: a gate's ``on:`` key stays the
    string "on", which ``yaml.safe_load`` would turn into True)."""
    from llmrelease.specfile import parse_yaml

    return parse_yaml(path.read_text(), path)[1]


HISTORY_CHUNK_ROWS = "40"


@dataclass(frozen=True)
class DemoHistory:
    project: Path
    """The project the releases ran in; its store is <project>/.llmrelease. Tests that change
    files or aliases work on a copy of it."""
    steps: dict[str, tuple[int, dict[str, Any]]]
    """By step (baseline, improved, regressed): the exit code and the ``--json`` outcome, with
    ``aliases_after``: the model and prompt aliases right after that release."""


@pytest.fixture(scope="session")
def demo_history(tmp_path_factory: pytest.TempPathFactory, _session_generations: Path) -> DemoHistory:
    """The demo's three releases, once per session, with the guard and the shadow, through the CLI
    on real vLLM, MLflow and Prefect: the baseline prompt (first champion), the few-shot prompt
    (shadowed against it, promoted) and the regressed prompt (rejected). The release e2e tests and
    the shadow e2e tests read what they left; each would otherwise run its own. Chunks of 40 rows
    (``HISTORY_CHUNK_ROWS``); the generations are kept in the session's shared directory."""
    import json

    from typer.testing import CliRunner

    from llmrelease.cli import app

    project = copy_project(tmp_path_factory.mktemp("e2e") / "project")
    steps = {
        "baseline": ["--prompt", str(project / "examples/support-triage/baseline.prompt.yaml")],
        "improved": [],
        "regressed": ["--prompt", str(project / "examples/support-triage/regressed.prompt.yaml")],
    }
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        # Chunks of 40 rows: the 72 tickets and 16 red-team prompts stream through vLLM, scoring and
        # the guard in several chunks (one of the guard's spans both evalsets), as 100k rows would.
        mp.setenv("LLMRELEASE_CHUNK_ROWS", HISTORY_CHUNK_ROWS)
        # Kept for the tests that release these candidates again (reuse_generations).
        mp.setenv("LLMRELEASE_CHECKPOINTS", str(_session_generations))
        mp.setenv("LLMRELEASE_KEEP_CHECKPOINTS", "1")
        for name, extra in steps.items():
            args = ["release", "support-triage", "--project", str(project), "--json", *extra]
            result = CliRunner().invoke(app, args, catch_exceptions=False)
            assert result.stdout.strip(), result.stderr
            report = json.loads(result.stdout)
            report["aliases_after"] = _aliases(project)
            out[name] = (result.exit_code, report)
    return DemoHistory(project, out)


def _aliases(project: Path) -> dict[str, str | None]:
    from llmrelease.mlflow_registry import MlflowRegistry

    store = project / ".llmrelease"
    reg = MlflowRegistry(f"sqlite:///{store / 'mlflow.db'}", artifact_root=(store / "artifacts").as_uri())
    out: dict[str, str | None] = {}
    for alias in ("champion", "challenger", "previous-champion"):
        info = reg.alias("support-triage", alias)
        out[alias] = info.version if info else None
        out[f"prompt:{alias}"] = str(reg.prompt_alias("support-triage", alias) or "") or None
    return out
