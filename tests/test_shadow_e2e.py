"""Shadow comparison end to end: real vLLM OpenAI-compatible server on 127.0.0.1 with the packaged
model (champion and candidate share it: only the prompt differs), traffic from a local file and from
a real S3 API (moto server), real MLflow and Prefect. The releases are the session's demo history
(tests/conftest.py), which the release e2e tests read too."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from llmrelease.cli import app
from llmrelease.mlflow_registry import MlflowRegistry
from tests.conftest import copy_project, read_yaml

pytestmark = pytest.mark.e2e

APP = "support-triage"


def cli(*args: str) -> tuple[int, dict[str, Any], str]:
    r = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return r.exit_code, (json.loads(r.stdout) if r.stdout.strip() else {}), r.stderr


@pytest.fixture(scope="module")
def released(demo_history, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """v1 (baseline prompt) champion, then v2 (few-shot) released with a shadow comparison: the
    session's demo history (tests/conftest.py), in a private copy of its project and store."""
    code, first = demo_history.steps["baseline"]
    assert code == 0, first
    assert first["shadow"] is None  # no champion yet: nothing to shadow
    assert {g["name"]: g["verdict"] for g in first["report"]["gates"]}["shadow-cost"] == "skipped"
    project = tmp_path_factory.mktemp("shadow") / "project"
    shutil.copytree(demo_history.project, project)  # artifacts stay where the history wrote them
    return project, demo_history.steps["improved"][1]


def registry(project: Path) -> MlflowRegistry:
    return MlflowRegistry(f"sqlite:///{project / '.llmrelease' / 'mlflow.db'}")


def test_release_shadows_the_champion_and_gates_decide(released) -> None:
    project, out = released
    m = out["metrics"]
    for side in ("champion", "candidate"):
        assert m[f"{side}.requests"] == 40 and m[f"{side}.error_rate"] == 0.0
        for q in ("p50", "p95", "p99"):
            assert 0 < m[f"{side}.ttft_{q}_s"] <= m[f"{side}.latency_{q}_s"]
            assert m[f"{side}.tpot_{q}_s"] > 0
        assert m[f"{side}.cost_per_1k_requests"] > 0
        assert 0.0 <= m[f"{side}.prefix_cache_hit_rate"] <= 1.0
    # The few-shot prompt repeats a long prefix: the server's prefix cache serves most of it.
    assert m["candidate.prefix_cache_hit_rate"] > 0.5
    assert m["candidate.prefix_cache_saving_per_1k"] > 0
    assert m["shadow.agreement_exact"] * 40 == pytest.approx(round(m["shadow.agreement_exact"] * 40))
    assert 0.0 <= m["shadow.agreement_rouge_l"] <= 1.0
    gates = {g["name"]: g for g in out["report"]["gates"]}
    for name, limit in (("shadow-no-errors", 0.0), ("shadow-ttft-p95", 3.0), ("shadow-cost", 3.0)):
        assert gates[name]["verdict"] == ("pass" if gates[name]["value"] <= limit else "fail"), name
    assert gates["shadow-cost"]["value"] == pytest.approx(m["shadow.cost_per_1k_requests_ratio"])
    assert out["shadow"]["requests"] == 40
    # One side in flight at a time (co-batched on one server, the TTFT ratio was exactly 1.000).
    assert any(n.startswith("timing: alternating phases (ABBA") for n in out["shadow"]["notes"])
    assert m["candidate.schema_conforms_rate"] == m["champion.json_parses_rate"] == 1.0


def test_shadow_report_and_tokens_in_mlflow(released) -> None:
    from transformers import AutoTokenizer

    from llmrelease.engines.model_source import resolve_model_dir
    from llmrelease.project import load_app

    project, out = released
    reg = registry(project)
    run_id = out["run_id"]
    paths = {a.path for a in reg.client.list_artifacts(run_id, "shadow")}
    assert {"shadow/report.html", "shadow/requests.json", "shadow/summary.json"} <= paths
    page = Path(reg.client.download_artifacts(run_id, "shadow/report.html")).read_text()
    assert page.count("<svg") == 3 and "shadow-ttft-p95" in page
    table = reg.load_artifact_dict(run_id, "shadow/requests.json")
    rows = [dict(zip(table["columns"], r, strict=True)) for r in table["data"]]
    assert len(rows) == 40
    # Token counts from the server's usage match the model's own tokenizer.
    spec = load_app(project, APP)
    tok = AutoTokenizer.from_pretrained(str(resolve_model_dir(spec.model.source, project_root=project)))
    traffic = {
        json.loads(line)["id"]: json.loads(line)
        for line in (project / "examples/support-triage/traffic.jsonl").read_text().splitlines()
    }
    for row in rows[:10]:
        # One streamed delta per generated token, plus the end-of-sequence token that has no text.
        assert row["candidate_output_tokens"] in (
            row["candidate_streamed_chunks"],
            row["candidate_streamed_chunks"] + 1,
        )
        assert (
            tok.decode(tok.encode(row["candidate_output"], add_special_tokens=False))
            == row["candidate_output"]
        )
        messages = spec.prompt.render(traffic[row["id"]]["vars"])
        prompt_text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert row["candidate_prompt_tokens"] == len(tok(prompt_text, add_special_tokens=False).input_ids)
        assert row["candidate_ttft_s"] <= row["candidate_latency_s"]
        json.loads(row["candidate_output"])  # the response schema holds through the server too


def test_standalone_shadow_from_s3_with_a_failing_gate(released, s3) -> None:
    """`llmrelease shadow` compares any registered version with the champion, reading traffic from
    S3; a shadow gate that fails exits 1 and moves nothing."""
    project, _ = released
    s3.create_bucket(Bucket="traffic")
    s3.put_object(
        Bucket="traffic",
        Key="support-triage/2026-11.jsonl",
        Body=(project / "examples/support-triage/traffic.jsonl").read_bytes(),
    )
    shadow = project / "registry" / APP / "shadow.yaml"
    text = shadow.read_text().replace(
        "source: examples/support-triage/traffic.jsonl",
        "source: s3://traffic/support-triage/2026-11.jsonl",
    )
    shadow.write_text(text.replace("n: 40", "n: 12").replace("sample: first", "sample: random"))
    gates = project / "registry" / APP / "gates.yaml"
    policy = read_yaml(gates)
    next(g for g in policy["gates"] if g["name"] == "shadow-cost")["max"] = 0.1
    gates.write_text(yaml.safe_dump(policy, sort_keys=False))
    reg = registry(project)
    champion_before = reg.alias(APP, "champion").version

    # v1 (the bare prompt) against v2 (few-shot), named explicitly: which of them the fixture's
    # second release left as champion depends on its shadow latency gate, a timing on this machine.
    code, out, err = cli("shadow", APP, "-p", str(project), "--version", "1", "--against", "2", "--json")
    assert code == 1, err
    assert out["candidate_version"] == "1" and out["champion_version"] == "2"
    verdicts = {g["name"]: g["verdict"] for g in out["report"]["gates"]}
    cost = next(g for g in out["report"]["gates"] if g["name"] == "shadow-cost")
    assert verdicts["shadow-cost"] == "fail" and 0.1 < cost["value"] < 1.0  # v1's prompt is shorter
    assert out["shadow"]["requests"] == 12
    run = reg.client.get_run(out["run_id"])
    assert run.data.tags["llmrelease.kind"] == "shadow"
    assert run.data.params["traffic_source"] == "s3://traffic/support-triage/2026-11.jsonl"
    assert reg.alias(APP, "champion").version == champion_before  # nothing moved


def test_bad_traffic_line_exits_2_and_registers_nothing(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project", guard=False)
    log = project / "examples/support-triage/traffic.jsonl"
    lines = log.read_text().splitlines()
    lines[2] = lines[2].replace('"timestamp"', '"timestmap"')
    log.write_text("\n".join(lines) + "\n")
    r = CliRunner().invoke(app, ["release", APP, "-p", str(project)], catch_exceptions=False)
    assert r.exit_code == 2
    err = "".join(r.stderr.split())  # the console wraps long lines, even inside a long path

    def has(text: str) -> bool:
        return "".join(text.split()) in err

    assert has(f"{log}:3") and has("unknown field 'timestmap' (typo?; required: timestamp)")
    assert has("on_bad_line: skip")
    db = project / ".llmrelease" / "mlflow.db"
    assert not db.exists() or registry(project).versions(APP) == []
