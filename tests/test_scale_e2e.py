"""Past one engine in one process, end to end with real parts: a release on the ``openai`` backend
against a vLLM OpenAI server the test starts, and a release killed (SIGKILL, a real process) half-way
through generation that resumes from its checkpoints. Both must give the offline engine's own
per-item outputs under greedy decoding.

The Ray tests run on a cluster of their own (`ray start --head`), joined through RAY_ADDRESS.

The app is the demo without guard and shadow, on its first 24 tickets in chunks of 4 rows (6
chunks): enough chunks to kill between, few enough items to keep the module to a few minutes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, copy_project, git
from tests.test_release_e2e import APP, BASELINE, registry_for, release

pytestmark = pytest.mark.e2e

ROWS = 24
CHUNK = "4"


def small_project(dest: Path, **engine: Any) -> Path:
    project = copy_project(dest, guard=False, shadow=False)
    tickets = project / "evalsets" / APP / "tickets.jsonl"
    tickets.write_text("".join(tickets.read_text().splitlines(keepends=True)[:ROWS]))
    if engine:
        path = project / "registry" / APP / "model.yaml"
        spec = yaml.safe_load(path.read_text())
        spec["engine"].update(engine)
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
    git(project, "commit", "-qam", "small")
    return project


def outputs(project: Path, run_id: str) -> dict[str, str]:
    reg = registry_for(project)
    local = reg.client.download_artifacts(run_id, "eval/items.json", str(project / ".dl" / run_id))
    table = json.loads(Path(local).read_text())
    cols = table["columns"]
    return {
        f"{r[cols.index('evalset')]}/{r[cols.index('id')]}": r[cols.index("output")] for r in table["data"]
    }


def metrics(project: Path, run_id: str) -> dict[str, float]:
    return registry_for(project).client.get_run(run_id).data.metrics


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The reference: the offline vLLM engine, uninterrupted."""
    project = small_project(tmp_path_factory.mktemp("offline") / "p")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMRELEASE_CHUNK_ROWS", CHUNK)
        _, out = release(project, "--prompt", str(project / BASELINE))
    assert out.get("run_id"), out
    got = outputs(project, out["run_id"])
    assert len(got) == ROWS
    return got


def test_openai_backend_against_a_running_vllm_server_gives_the_offline_outputs(
    offline: dict[str, str], tmp_path: Path, monkeypatch
) -> None:
    from llmrelease.engines.model_source import resolve_model_dir
    from llmrelease.engines.openai_server import get_server
    from llmrelease.specs import ModelSpec, content_hash

    spec = ModelSpec.model_validate(yaml.safe_load((REPO / "registry" / APP / "model.yaml").read_text()))
    model_dir = resolve_model_dir(spec.source, project_root=REPO)
    # A vLLM OpenAI server already running for the spec: the one the session's shadow step started
    # (same key as the shadow's), else one started here; the release reaches it by URL only.
    key = content_hash({"model_dir": str(model_dir), "engine": spec.engine.vllm_fields()})
    server, _ = get_server(
        key, model_dir, spec.engine, name="triage-smollm2", prefix_caching=True, timeout_s=600
    )
    project = small_project(tmp_path / "p", backend="openai", base_url=server.base_url, concurrency=8)
    monkeypatch.setenv("LLMRELEASE_CHUNK_ROWS", CHUNK)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-test-key-not-a-secret-but-never-logged")
    _, out = release(project, "--prompt", str(project / BASELINE))
    assert out.get("run_id"), out
    got = outputs(project, out["run_id"])
    assert got == offline
    m = metrics(project, out["run_id"])
    assert m["serving.items"] == ROWS and m["serving.prompt_tokens"] > 0 and m["serving.ttft_p50_s"] > 0
    assert m["checkpoint.items_generated"] == ROWS
    reg = registry_for(project)
    manifest = reg.load_artifact_dict(out["run_id"], "manifest.json")
    assert manifest["engine"]["backend"] == "openai"
    assert reg.client.get_run(out["run_id"]).data.params["engine_backend"] == "openai"
    store = project / ".llmrelease"
    for f in store.rglob("*"):  # the key is in no record: not in the store, not in an artifact
        if f.is_file() and f.stat().st_size < 50_000_000:
            assert b"sk-local-test-key" not in f.read_bytes(), f


def _chunks_on_disk(root: Path) -> int:
    return sum(1 for p in root.rglob("*.json") if not p.name.startswith("."))


def test_a_release_killed_mid_generation_resumes_and_generates_only_the_missing_chunks(
    offline: dict[str, str], tmp_path: Path, monkeypatch
) -> None:
    project = small_project(tmp_path / "p")
    checkpoints = Path(os.environ["LLMRELEASE_CHECKPOINTS"])
    monkeypatch.setenv("LLMRELEASE_CHUNK_ROWS", CHUNK)
    cmd = [sys.executable, "-m", "llmrelease.cli", "release", APP, "-p", str(project), "--prompt",
           str(project / BASELINE), "--json"]  # fmt: skip
    log = (tmp_path / "killed.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
    deadline = time.monotonic() + 900
    try:
        while _chunks_on_disk(checkpoints) < 2:
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no chunk finished in 15 minutes"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the release and its engine core, mid-generation
        proc.wait(60)
        log.close()
    done = _chunks_on_disk(checkpoints)
    assert 2 <= done < ROWS // int(CHUNK), f"{done} chunks finished before the kill: too late to test"

    code, out = release(project, "--prompt", str(project / BASELINE))
    assert out.get("run_id"), out
    m = metrics(project, out["run_id"])
    reused = int(m["checkpoint.chunks_reused"])
    assert reused == done  # every chunk finished before the kill, and nothing else
    assert m["checkpoint.items_reused"] == reused * int(CHUNK)
    assert m["checkpoint.items_generated"] == ROWS - reused * int(CHUNK)
    assert outputs(project, out["run_id"]) == offline
    assert _chunks_on_disk(checkpoints) == 0  # recorded in MLflow: the checkpoints are gone


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A Ray cluster of its own (``ray start --head``, 2 CPUs), joined through RAY_ADDRESS as a
    worker of the ``release-ray`` deployment joins a real one; stopped with its replicas."""
    from llmrelease.engines import ray_backend

    ray_bin = str(Path(sys.executable).parent / "ray")
    port = _free_port()
    # `ray start` turns on token authentication (ray 2.60), and a client must have RAY_AUTH_MODE=token
    # before Ray is first imported (vLLM's import pulls Ray in, earlier in this session): this
    # throwaway cluster on 127.0.0.1 runs without it. deploy/README says how a worker joins one with.
    started = subprocess.run(
        [ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        ray_backend.shutdown()  # the replicas, and this process's connection
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, timeout=120)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ray_backend_with_two_replicas_on_a_ray_cluster_gives_the_offline_outputs(
    offline: dict[str, str], ray_cluster: str, tmp_path: Path, monkeypatch
) -> None:
    """The ``release-ray`` deployment's model spec (examples/support-triage/model.ray.yaml)."""
    project = small_project(tmp_path / "p")
    monkeypatch.setenv("LLMRELEASE_CHUNK_ROWS", CHUNK)
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster)
    model = project / "examples" / APP / "model.ray.yaml"
    _, out = release(project, "--prompt", str(project / BASELINE), "--model", str(model))
    assert out.get("run_id"), out
    assert outputs(project, out["run_id"]) == offline
    m = metrics(project, out["run_id"])
    assert m["engine.replicas"] == 2 and m["checkpoint.items_generated"] == ROWS
    manifest = registry_for(project).load_artifact_dict(out["run_id"], "manifest.json")
    assert manifest["engine"]["backend"] == "ray"


def test_a_lost_ray_replica_is_restarted_and_costs_only_its_shard(
    offline: dict[str, str], ray_cluster: str, tmp_path: Path
) -> None:
    """Kill one replica's process (SIGKILL) while chunks are in flight: Ray restarts it, sends its
    shard again, and every output is still the offline engine's."""
    import ray

    from llmrelease.engines import ray_backend
    from llmrelease.project import load_app
    from llmrelease.tasks.evaluation.evalsets import load_evalsets

    if not ray_backend._ENGINES:
        pytest.skip("needs the replicas of the ray release above (run the module, not this test alone)")
    (engine,) = ray_backend._ENGINES.values()
    project = small_project(tmp_path / "p")
    spec = load_app(project, APP, prompt_file=project / BASELINE)
    (tickets,) = [e for e in load_evalsets(spec) if e.name == "tickets"]
    rows = [row for chunk in tickets.batches(int(CHUNK)) for row in chunk]
    chunks = [[spec.prompt.render(r.vars) for r in rows[i : i + 4]] for i in range(0, ROWS, 4)]
    stream = engine.generate_stream(chunks, spec.model.sampling, response_schema=spec.model.response_schema)
    texts = [g.text for g in next(stream).generations]
    victim = ray.get(engine.actors[0].pid.remote())
    os.kill(victim, signal.SIGKILL)  # chunk 2's shards are already queued on the replicas
    texts += [g.text for batch in stream for g in batch.generations]
    assert texts == [offline[f"tickets/{r.id}"] for r in rows]
    assert ray.get(engine.actors[0].pid.remote()) != victim  # restarted, and serving again
