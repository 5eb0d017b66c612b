"""The release flow as a Prefect deployment from prefect.yaml: a real Prefect server, a real process
worker, on 127.0.0.1. The worker runs the flow in its own process (its own vLLM engine)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from llmrelease.mlflow_registry import MlflowRegistry
from tests.conftest import REPO, copy_project

pytestmark = pytest.mark.e2e

PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prefect_server(tmp_path: Path):
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("prefect server did not become healthy in 90 s")
        yield env
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> str:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_release_deployment_from_prefect_yaml_runs_on_a_worker(prefect_server, tmp_path: Path) -> None:
    env = {
        **prefect_server,
        "LLMRELEASE_PROJECT_DIR": str(copy_project(tmp_path / "project", guard=False, shadow=False)),
    }
    project = Path(env["LLMRELEASE_PROJECT_DIR"])
    (project / "prefect.yaml").write_text((REPO / "prefect.yaml").read_text())
    run([PREFECT, "work-pool", "create", "cpu", "--type", "process"], env, project)
    run([PREFECT, "--no-prompt", "deploy", "--name", "release"], env, project)
    run([PREFECT, "deployment", "run", "release/release", "--param", "app=support-triage"], env, project)
    # --run-once: the worker takes the scheduled run, runs it to the end, and exits by itself.
    run([PREFECT, "worker", "start", "--pool", "cpu", "--run-once"], env, tmp_path, timeout=600)

    api = env["PREFECT_API_URL"]
    runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 10}, timeout=10).json()
    assert [r["state"]["type"] for r in runs] == ["COMPLETED"]
    assert runs[0]["parameters"] == {"app": "support-triage", "project_dir": "."}  # no URI, no secret
    reg = MlflowRegistry(f"sqlite:///{project / '.llmrelease' / 'mlflow.db'}")
    champion = reg.alias("support-triage", "champion")
    assert champion is not None and champion.tags["llmrelease.verdict"] == "passed"
