"""Triggers end to end, on the stack `llmrelease serve` starts: a real Prefect server, real process
workers (cpu, gpu), a real MLflow tracking server (SQLite) with its alias webhook, and the relay,
all on 127.0.0.1. Nothing is faked: GitHub's deliveries are built in GitHub's format and signed with
the secret `serve` generated; alias moves go through MLflow's REST API, as the UI does.

Sequence (one stack, ~3 min on 2 CPU cores): a forged push starts nothing; a signed push that
touches one app's prompt releases that app only (on-push -> the release deployment -> promoted),
and the promotion's own alias webhook records a rollout (on-alias); the same delivery replayed
starts nothing; a person making an ungated version champion is recorded as an override; the
nightly schedule has scheduled runs; Ctrl-C stops every process.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmrelease.mlflow_registry import MlflowRegistry
from tests.conftest import REPO, copy_project, git
from tests.github_payloads import push_payload, signed

pytestmark = pytest.mark.e2e


def read(url: str, json: dict[str, Any], *, within_s: float = 120) -> Any:
    """POST a read-only query (Prefect's filters), retrying slow or refused reads until a deadline:
    with another release running beside it, a busy server can miss a fixed per-request timeout."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            r = httpx.post(url, json=json, timeout=30)
            r.raise_for_status()
            return r.json()
        except (httpx.TransportError, httpx.HTTPStatusError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


APP, OTHER = "support-triage", "other-app"
LLMRELEASE = str(Path(sys.executable).parent / "llmrelease")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, project: Path, proc: subprocess.Popen[str], ports: dict[str, int]) -> None:
        self.project, self.proc, self.ports = project, proc, ports
        self.output: list[str] = []
        self.api = f"http://127.0.0.1:{ports['prefect']}/api"
        self.mlflow = f"http://127.0.0.1:{ports['mlflow']}"
        self.relay = f"http://127.0.0.1:{ports['relay']}"

    @property
    def github_secret(self) -> str:
        untracked = git(self.project, "status", "--porcelain", "--untracked-files=all")
        assert "/serve/" not in untracked  # secrets and logs can never be committed by accident
        return (self.project / ".llmrelease" / "serve" / "github-webhook-secret").read_text().strip()

    def runs(self, flow: str | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"limit": 100, "sort": "EXPECTED_START_TIME_ASC"}
        if flow:
            body["flows"] = {"name": {"any_": [flow]}}
        return read(f"{self.api}/flow_runs/filter", body)

    def wait(self, what: str, check: Callable[[], Any], timeout_s: float = 300) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "llmrelease serve died:\n" + "".join(self.output[-40:])
            result = check()
            if result:
                return result
            time.sleep(1)
        logs = self.project / ".llmrelease" / "serve" / "logs"
        tails = {p.name: p.read_text(errors="replace")[-1500:] for p in logs.glob("*.log")}
        runs = [(r["flow_id"][:8], r["name"], r["state"]["type"]) for r in self.runs()]
        pytest.fail(f"timed out waiting for {what}; runs: {runs}; logs: {tails}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, _session_generations: Path):
    project = copy_project(tmp_path_factory.mktemp("stack") / "project", guard=False, shadow=False)
    # A second app that nothing in the pushes touches: it must not be released.
    shutil.copytree(project / "registry" / APP, project / "registry" / OTHER)
    shutil.copytree(project / "evalsets" / APP, project / "evalsets" / OTHER)
    (project / "prefect.yaml").write_text((REPO / "prefect.yaml").read_text())
    git(project, "add", "-A")
    git(project, "commit", "-qm", "second app, deployments")
    # Not about generation: the session's kept generations of the demo serve the pushed release.
    reuse = {"LLMRELEASE_CHECKPOINTS": str(_session_generations), "LLMRELEASE_KEEP_CHECKPOINTS": "1"}
    with running_stack(project, env=reuse) as s:
        yield s


@contextlib.contextmanager
def running_stack(project: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Stack]:
    """``llmrelease serve`` for ``project`` on free ports until the block ends (then Ctrl-C).

    Started with SIGINT ignored, as a shell starts a background job (``trap '' INT`` then ``exec``:
    the disposition survives exec): Ctrl-C must stop the stack all the same."""
    ports = {name: free_port() for name in ("prefect", "mlflow", "relay")}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    base.update(PREFECT_HOME=str(project.parent / "prefect-home"), COLUMNS="200", **(env or {}))
    proc = subprocess.Popen(
        [
            "sh", "-c", "trap '' INT; exec \"$@\"", "sh",
            LLMRELEASE, "serve", "--project", str(project),
            "--prefect-port", str(ports["prefect"]),
            "--mlflow-port", str(ports["mlflow"]),
            "--relay-port", str(ports["relay"]),
            *args,
        ],
        env=base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
    )  # fmt: skip
    s = Stack(project, proc, ports)
    try:
        deadline = time.monotonic() + 240
        assert proc.stdout is not None
        for line in proc.stdout:
            s.output.append(line)
            if "llmrelease stack ready" in line or time.monotonic() > deadline:
                break
        assert "llmrelease stack ready" in "".join(s.output), "".join(s.output)
        # Keep reading: a full pipe would block the stack's next print (and its Ctrl-C handling).
        threading.Thread(target=lambda: s.output.extend(proc.stdout or ()), daemon=True).start()
        yield s
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def completed(stack: Stack, flow: str, n: int) -> Callable[[], list[dict[str, Any]] | None]:
    def check() -> list[dict[str, Any]] | None:
        runs = stack.runs(flow)
        states = [r["state"]["type"] for r in runs]
        assert not {"FAILED", "CRASHED"} & set(states), runs
        return runs if states.count("COMPLETED") >= n else None

    return check


def test_push_release_rollout_replay_and_override(stack: Stack) -> None:
    project = stack.project
    before = git(project, "rev-parse", "HEAD")
    prompt = project / "registry" / APP / "prompt.yaml"
    prompt.write_text(prompt.read_text().replace("version: ", "version: pushed-", 1))
    git(project, "commit", "-qam", "Tighten the triage prompt")
    after = git(project, "rev-parse", "HEAD")
    payload = push_payload(before=before, after=after, modified=[f"registry/{APP}/prompt.yaml"])

    # Forged: signed with another secret. 401, and nothing starts.
    body, headers = signed(payload, "not-the-secret")
    assert (
        httpx.post(f"{stack.relay}/hooks/github", content=body, headers=headers, timeout=120).status_code
        == 401
    )

    body, headers = signed(payload, stack.github_secret)
    sent = time.monotonic()
    r = httpx.post(f"{stack.relay}/hooks/github", content=body, headers=headers, timeout=120)
    assert r.status_code == 202, r.text
    [on_push] = stack.wait("on-push to complete", completed(stack, "on-push", 1))
    latency = time.monotonic() - sent
    print(f"\nsigned push -> completed release: {latency:.1f} s")

    [release] = stack.runs("release")
    assert release["state"]["type"] == "COMPLETED"
    # No tracking URI, no secret among the parameters Prefect stores: the worker's environment has them.
    assert release["parameters"] == {"app": APP, "project_dir": ".", "git_commit": after}
    assert release["work_pool_name"] == "cpu"
    assert on_push["parameters"]["changed_paths"] == [f"registry/{APP}/prompt.yaml"]
    registry = MlflowRegistry(stack.mlflow)
    champion = registry.alias(APP, "champion")
    assert champion is not None and champion.tags["llmrelease.git_commit"] == after
    assert registry.versions(OTHER) == []  # untouched app: not released

    # The promotion moved `champion` through MLflow's API: its webhook started on-alias -> rollout.
    stack.wait("on-alias rollout", completed(stack, "on-alias", 1), timeout_s=120)
    champion = registry.alias(APP, "champion")
    assert champion.tags.get("llmrelease.rollout_run"), champion.tags

    # The same delivery again (GitHub retry, or a replay): 200, nothing new.
    again = httpx.post(f"{stack.relay}/hooks/github", content=body, headers=headers, timeout=120)
    assert again.status_code == 200 and again.json()["duplicate"] is True

    # A person makes a version that never passed a gate champion, through the REST API the UI uses.
    rest = f"{stack.mlflow}/api/2.0/mlflow"
    created = httpx.post(
        f"{rest}/model-versions/create",
        json={"name": APP, "source": "s3://acme-models/hand-made"},
        timeout=120,
    )
    assert created.status_code == 200, created.text
    mv = created.json()["model_version"]
    r = httpx.post(
        f"{rest}/registered-models/alias",
        json={"name": APP, "alias": "champion", "version": mv["version"]},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    stack.wait("on-alias override", completed(stack, "on-alias", 2), timeout_s=120)
    flagged = registry.alias(APP, "champion")
    assert flagged is not None and flagged.version == mv["version"]
    assert "never evaluated" in flagged.tags["llmrelease.override"]
    assert f"v{mv['version']}" in (registry.model_tags(APP) or {})["llmrelease.champion_override"]
    kinds = sorted(
        r.data.tags["llmrelease.kind"]
        for r in registry.client.search_runs([registry.experiment_id(APP)], max_results=50)
        if "llmrelease.kind" in r.data.tags
    )
    assert kinds == ["override", "rollout"]

    # Everything that ran: one on-push (the forged and the replayed deliveries started nothing),
    # one release, two on-alias runs (challenger and previous-champion moves are not champion moves).
    assert len(stack.runs("on-push")) == 1
    assert len(stack.runs("release")) == 1
    assert len(stack.runs("on-alias")) == 2


def test_nightly_schedule_creates_scheduled_runs(stack: Stack) -> None:
    [dep] = read(f"{stack.api}/deployments/filter", {"deployments": {"name": {"any_": ["nightly"]}}})
    assert dep["schedules"][0]["schedule"]["cron"] == "0 3 * * *"

    def scheduled() -> list[dict[str, Any]]:
        runs = read(
            f"{stack.api}/flow_runs/filter",
            {
                "deployments": {"id": {"any_": [dep["id"]]}},
                "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            },
        )
        return [r for r in runs if r["expected_start_time"].endswith(("03:00:00Z", "03:00:00+00:00"))]

    assert stack.wait("scheduled nightly runs", scheduled, timeout_s=120)


def test_ctrl_c_stops_every_process(stack: Stack) -> None:
    pids = [int(p) for p in re.findall(r"pid (\d+)", "".join(stack.output))]
    assert len(pids) == 5  # prefect server, mlflow server, two workers, relay
    started = time.monotonic()
    stack.proc.send_signal(signal.SIGINT)
    try:
        code = stack.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        status = Path(f"/proc/{stack.proc.pid}/status").read_text().splitlines()
        signals = [line for line in status if line.startswith(("SigBlk", "SigIgn", "SigCgt", "State"))]
        tail = "".join(stack.output[-40:])
        pytest.fail(f"serve still running 60 s after SIGINT; {signals}; output:\n{tail}")
    assert code == 0, "".join(stack.output[-40:])
    print(f"\nstopped in {time.monotonic() - started:.1f} s")
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
