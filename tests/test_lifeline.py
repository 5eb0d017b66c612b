"""The lifeline: whatever a process started dies with it, even when it is SIGKILLed.

A parent program (a subprocess) starts its lifeline, then children of every kind a release has: an
exec'd child, a multiprocessing fork child with a forked grandchild, a child in its own session, a
daemon that detached itself. It prints their pids; the test kills it (or lets it exit) and polls until
a 10 s deadline for all of them to be gone. A zombie counts as gone (it holds no memory, and reaping it
is its new parent's business, here the container's init).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from llmrelease.lifeline import ENV_DISABLE, ENV_MARKER

REPO = Path(__file__).resolve().parent.parent
DEADLINE_S = 10.0

PARENT = textwrap.dedent(
    """
    import json, multiprocessing as mp, os, signal, subprocess, sys, time
    from llmrelease.lifeline import start_lifeline

    def forker(conn):
        pid = os.fork()
        if pid == 0:
            time.sleep(300)
            os._exit(0)
        conn.send(pid)
        time.sleep(300)

    if __name__ == "__main__":
        mode = sys.argv[1]
        pids = {"lifeline": start_lifeline()}
        pids["exec"] = subprocess.Popen(["sleep", "300"]).pid
        pids["session"] = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
        ).pid
        if mode == "kill":
            a, b = mp.Pipe()
            child = mp.get_context("fork").Process(target=forker, args=(b,))
            child.start()
            pids["fork"] = child.pid
            pids["fork_grandchild"] = a.recv()
        else:  # multiprocessing would join its children at a normal exit: a plain fork instead
            pid = os.fork()
            if pid == 0:
                time.sleep(300)
                os._exit(0)
            pids["fork"] = pid
        detach = "setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $!"
        pids["daemon"] = int(subprocess.run(["sh", "-c", detach], capture_output=True, text=True).stdout)
        print(json.dumps(pids), flush=True)
        if mode == "kill":
            time.sleep(300)
        elif mode == "suicide":  # before the lifeline has even looked at its tree
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _survivors(procs: dict[Any, psutil.Process], deadline_s: float = DEADLINE_S) -> dict[Any, str]:
    """Poll until every process is gone or the deadline passes; what is still alive then."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in procs.values()):
            return {}
        time.sleep(0.05)
    return {k: " ".join(p.cmdline()) for k, p in procs.items() if _alive(p)}


def _kill_all(procs) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()


@pytest.fixture
def parent(tmp_path: Path):
    """Start the parent program in a mode; yields (Popen, {name: psutil.Process}); kills leftovers."""
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    started: list[subprocess.Popen[str]] = []
    children: list[dict[str, psutil.Process]] = []

    def start(mode: str) -> tuple[subprocess.Popen[str], dict[str, psutil.Process]]:
        env = {k: v for k, v in os.environ.items() if k not in (ENV_MARKER, ENV_DISABLE)}
        proc = subprocess.Popen(
            [sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True, cwd=REPO, env=env
        )
        pids = json.loads(proc.stdout.readline())
        procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        started.append(proc)
        children.append(procs)
        return proc, procs

    yield start
    for proc in started:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    for procs in children:
        _kill_all(procs.values())


def test_a_sigkilled_parents_children_and_lifeline_are_gone_within_10_s(parent) -> None:
    proc, procs = parent("kill")
    time.sleep(1.0)  # the lifeline has snapshotted the tree by now
    proc.kill()
    proc.wait()
    assert _survivors(procs) == {}


def test_children_are_found_when_the_parent_dies_before_the_first_snapshot(parent) -> None:
    proc, procs = parent("suicide")  # fork child: by the at-fork report; exec'd ones: by the marker
    assert proc.wait() == -signal.SIGKILL
    assert _survivors(procs) == {}


def test_a_normal_exit_ends_what_the_parent_left_behind(parent) -> None:
    proc, procs = parent("exit")
    assert proc.wait() == 0
    assert _survivors(procs) == {}


def test_processes_the_parent_did_not_start_survive(parent) -> None:
    sibling = subprocess.Popen(["sleep", "300"])  # the test's own child, started before the parent
    try:
        proc, procs = parent("kill")
        time.sleep(1.0)
        proc.kill()
        proc.wait()
        assert _survivors(procs) == {}
        time.sleep(0.5)
        assert sibling.poll() is None
        assert _alive(psutil.Process(os.getpid()))
    finally:
        sibling.kill()
        sibling.wait()


def test_the_lifeline_idles_cheaply(parent) -> None:
    _, procs = parent("kill")
    lifeline = procs["lifeline"]
    time.sleep(0.5)
    before = lifeline.cpu_times()
    time.sleep(2.0)
    after = lifeline.cpu_times()
    used = (after.user + after.system) - (before.user + before.system)
    assert used < 0.2, f"the lifeline used {used:.2f} s of CPU in 2 s"


def _run(code: str, **env: str) -> str:
    full = {k: v for k, v in os.environ.items() if k not in (ENV_MARKER, ENV_DISABLE)} | env
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO, env=full
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_cli_starts_one_lifeline_per_process() -> None:
    out = _run(
        """
        import psutil
        from llmrelease.cli import _quiet
        from llmrelease.lifeline import start_lifeline
        _quiet(False)
        _quiet(True)
        again = start_lifeline()
        import time
        deadline = time.monotonic() + 30  # a busy machine may show a child before its command line
        while True:
            kids = [p for p in psutil.Process().children() if "llmrelease.lifeline" in " ".join(p.cmdline())]
            if kids or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        print(len(kids), bool(kids) and kids[0].pid == again)
        print([(p.pid, p.status(), p.cmdline()[:3]) for p in psutil.Process().children()])
        """
    )
    assert out.splitlines()[0] == "1 True", out


def test_the_lifeline_can_be_disabled() -> None:
    out = _run(
        """
        import psutil
        from llmrelease.lifeline import start_lifeline
        print(start_lifeline(), len(psutil.Process().children()))
        """,
        **{ENV_DISABLE: "1"},
    )
    assert out == "None 0"


# ---------------------------------------------------------------------------------------------------
# End to end: a real release (Prefect's temporary server, vLLM's engine core) SIGKILLed mid-run.

ENGINE_RSS = 400e6  # vLLM's engine core passes this while loading SmolLM2; nothing else a release runs


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("llmrelease")
    return [str(script)] if script.exists() else [sys.executable, "-m", "llmrelease.cli"]


@pytest.mark.e2e
@pytest.mark.timeout(420)
def test_a_sigkilled_release_leaves_no_process_behind(tmp_path: Path) -> None:
    from tests.conftest import copy_project

    project = copy_project(tmp_path / "p", guard=False, shadow=False)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", ENV_MARKER, ENV_DISABLE)
    }
    # vLLM's engine core in its own process, as on a GPU host (on CPU llmrelease keeps it in the
    # release's process: engines/process_layout.py): the child that must not outlive the release.
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"
    log = (tmp_path / "release.log").open("w")
    release = subprocess.Popen(
        [*_cli(), "release", "support-triage", "--project", str(project)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    seen: dict[tuple[int, float], psutil.Process] = {}
    prefect = engine = None
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and release.poll() is None and not (prefect and engine):
            try:
                children = psutil.Process(release.pid).children(recursive=True)
            except psutil.Error:
                children = []
            for p in children:
                try:
                    seen.setdefault((p.pid, p.create_time()), p)
                    cmd = " ".join(p.cmdline())
                    if "prefect.server.api.server" in cmd:
                        prefect = p
                    elif "llmrelease.lifeline" not in cmd and p.memory_info().rss > ENGINE_RSS:
                        engine = p
                except psutil.Error:
                    pass
            time.sleep(0.2)
        assert release.poll() is None, f"the release ended first:\n{(tmp_path / 'release.log').read_text()}"
        assert prefect and engine, f"no Prefect server or engine core after 240 s: {_describe(seen)}"
        release.kill()
        release.wait()
        left = _survivors(dict(enumerate(seen.values())))
        assert left == {}, f"alive 10 s after SIGKILL: {left}"
    finally:
        release.kill()
        release.wait()
        _kill_all(seen.values())
        log.close()


def _describe(seen: dict[tuple[int, float], psutil.Process]) -> list[str]:
    out = []
    for p in seen.values():
        try:
            out.append(f"{p.pid} {p.memory_info().rss / 1e6:.0f} MB {' '.join(p.cmdline())[:100]}")
        except psutil.Error:
            out.append(f"{p.pid} (gone)")
    return out
