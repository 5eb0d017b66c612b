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
from llmrelease.tasks.feedback.signal import check_feedback
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

    # status: the champion's production feedback beside its evalset scores (v2: 10 of 21 negative).
    st = runner.invoke(app, ["status", APP, "--project", str(project), "--json"], catch_exceptions=False)
    champion = next(row for row in json.loads(st.stdout)["aliases"] if row["alias"] == "champion")
    assert champion["feedback"]["feedback"] == 21
    assert champion["feedback"]["negative_share"] == pytest.approx(10 / 21, abs=1e-4)
    table = runner.invoke(app, ["status", APP, "--project", str(project)], catch_exceptions=False).stdout
    assert "users: 48% neg [28%-68%] n=21" in table

    # The nightly's check: v2's users complain less than v1's did (7 of 12): nothing to flag...
    check = check_feedback(registry, APP, ("2", 2), ("1", 1))
    assert check is not None and not check.flagged and check.harvest_run_id  # the latest harvest
    # ...until a log where every rating of v2 is negative is harvested.
    lines = []
    for line in (project / "examples" / APP / "traffic.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if (rec.get("served") or {}).get("model_version") == "2" and rec.get("feedback", {}).get("score"):
            rec["feedback"]["score"] = "down"
        lines.append(json.dumps(rec))
    worse = tmp_path / "worse.jsonl"
    worse.write_text("\n".join(lines) + "\n")
    r = runner.invoke(app, ["harvest", APP, "--project", str(project), "--traffic", str(worse), "--json"])
    assert r.exit_code == 0, r.stderr
    check = check_feedback(registry, APP, ("2", 2), ("1", 1))
    assert check is not None and check.flagged and check.p_value < 0.05, check


@pytest.mark.reuse_generations
def test_a_release_gates_on_the_harvested_evalset_and_cites_its_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop closed: harvest, review (copy under a stable name), release. The harvested rows are
    generated and scored on real vLLM and a paired gate compares the candidate with the champion on
    exactly those rows; the run cites the snapshot. (The tickets' generations come from the
    session's kept checkpoints: this test is about the evalset, not generation.)"""
    import yaml

    from tests.conftest import HISTORY_CHUNK_ROWS, copy_project

    monkeypatch.setenv("LLMRELEASE_CHUNK_ROWS", HISTORY_CHUNK_ROWS)
    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    log = "examples/support-triage/traffic.jsonl"
    runner = CliRunner()
    harvested = runner.invoke(
        app, ["harvest", APP, "--project", str(project), "--traffic", log, "--json"], catch_exceptions=False
    )
    assert harvested.exit_code == 0, harvested.stderr
    files = {k: Path(v) for k, v in json.loads(harvested.stdout)["files"].items()}
    rows = files["regression"].read_bytes().count(b"\n")
    assert rows >= 10
    evalsets = project / "evalsets" / APP
    shutil.copy(files["regression"], evalsets / "feedback.jsonl")  # the reviewer's copy, a stable name
    shutil.copy(files["card"], evalsets / "feedback.card.yaml")
    gates_path = project / "registry" / APP / "gates.yaml"
    gates = yaml.safe_load(gates_path.read_text())
    gates["gates"] += [
        {"name": "feedback-schema-conforms", "metric": "feedback.schema_conforms", "min": 0.99},
        {
            "name": "feedback-category-vs-champion",
            "metric": "feedback.category_accuracy",
            "max_regression": 0.1,
        },
    ]
    gates_path.write_text(yaml.safe_dump(gates, sort_keys=False))

    def release(*extra: str) -> tuple[int, dict]:
        r = runner.invoke(
            app, ["release", APP, "--project", str(project), "--json", *extra], catch_exceptions=False
        )
        assert r.stdout.strip(), r.stderr
        return r.exit_code, json.loads(r.stdout)

    code, first = release("--prompt", str(project / "examples/support-triage/baseline.prompt.yaml"))
    assert code == 0, first
    by_name = {g["name"]: g for g in first["report"]["gates"]}
    assert by_name["feedback-schema-conforms"]["verdict"] == "pass"
    assert by_name["feedback-category-vs-champion"]["verdict"] == "skipped"  # no champion yet

    code, second = release()  # the few-shot prompt against the baseline, on the harvested rows too
    gate = {g["name"]: g for g in second["report"]["gates"]}["feedback-category-vs-champion"]
    assert gate["n"] == rows and gate["champion_value"] is not None and gate["value"] is not None
    assert gate["delta"] == pytest.approx(gate["value"] - gate["champion_value"], abs=1e-9)
    assert gate["verdict"] in {"pass", "fail", "inconclusive"}
    assert code in {0, 1, 5}  # whatever the rows decide; the gate decided on them

    registry = MlflowRegistry(f"sqlite:///{project / '.llmrelease' / 'mlflow.db'}")
    tags = registry.run_tags(second["run_id"])
    card = yaml.safe_load((evalsets / "feedback.card.yaml").read_text())
    assert tags["llmrelease.evalset.feedback.harvest_digest"] == card["harvest"]["digest"]
    assert tags["llmrelease.evalset.feedback.harvest_rows_unchanged"] == "true"
