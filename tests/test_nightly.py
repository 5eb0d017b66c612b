"""The nightly drift check: the pure comparison (no server, no engine), the paths that need MLflow but
no model, and one end-to-end run on the real vLLM engine (release once, check, change labels, check)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmrelease.catalogue import MetricCatalogue, MetricDef, shadow_metrics
from llmrelease.errors import InputError
from llmrelease.tasks.promotion.nightly import DriftReport, DriftRow, NightlyFailed
from llmrelease.tasks.promotion.nightly import compare as _compare

APP = "support-triage"
CATALOGUE = MetricCatalogue(
    [
        MetricDef(m, "higher", True, "score", "scorer:exact_match")
        for m in ("tickets.acc", "tickets.new_scorer", "a.acc", "b.acc", "fresh.acc")
    ]
    + list(shadow_metrics())
)


def compare(*args, **kwargs):
    return _compare(*args, catalogue=CATALOGUE, **kwargs)


def _items(n: int, value: float = 1.0, **overrides: float) -> dict[str, float]:
    out = {f"t{i:03d}": value for i in range(n)}
    out.update(overrides)
    return out


# ---------------------------------------------------------------------------------- pure comparison


def test_unchanged_scores_on_the_same_evalset_are_no_drift() -> None:
    items = {"tickets.acc": _items(10)}
    rows, notes = compare(items, items, {"tickets.acc": 1.0}, {"tickets.acc": 1.0}, {"tickets": True}, 0.02)
    assert rows == [DriftRow("tickets.acc", 1.0, 1.0, 0.0, 0, False, "items", 10)]
    assert notes == []


def test_same_evalset_is_compared_item_by_item_and_counts_changed_items() -> None:
    then = {"tickets.acc": _items(10, 1.0)}
    now = {"tickets.acc": _items(10, 1.0, t000=0.0, t001=0.0, t002=0.0)}
    rows, _ = compare(then, now, {}, {}, {"tickets": True}, 0.02)
    (row,) = rows
    assert row.basis == "items" and row.n == 10
    assert row.changed_items == 3
    assert row.delta == pytest.approx(-0.3)
    assert row.drifted


def test_item_changes_that_cancel_out_are_counted_but_not_drift() -> None:
    then = {"tickets.acc": _items(10, 0.0, t000=1.0)}
    now = {"tickets.acc": _items(10, 0.0, t001=1.0)}  # one answer got worse, another better
    (row,), _ = compare(then, now, {}, {}, {"tickets": True}, 0.02)
    assert row.delta == 0.0 and row.changed_items == 2 and not row.drifted


def test_a_change_within_tolerance_is_not_drift() -> None:
    then = {"tickets.acc": _items(72, 1.0)}
    now = {"tickets.acc": _items(72, 1.0, t000=0.0)}  # -1/72 = -0.0139
    (row,), _ = compare(then, now, {}, {}, {"tickets": True}, 0.02)
    assert row.changed_items == 1 and not row.drifted
    (row,), _ = compare(then, now, {}, {}, {"tickets": True}, 0.01)
    assert row.drifted


def test_only_items_present_on_both_sides_are_paired() -> None:
    then = {"tickets.acc": {"a": 1.0, "b": 1.0}}
    now = {"tickets.acc": {"b": 1.0, "c": 0.0}}
    (row,), _ = compare(then, now, {}, {}, {"tickets": True}, 0.02)
    assert row.n == 1 and row.delta == 0.0


def test_a_changed_evalset_is_compared_by_aggregate_with_a_note() -> None:
    then = {"tickets.acc": _items(10, 1.0)}  # per-item scores of other rows: must not be paired
    now = {"tickets.acc": _items(10, 0.5)}
    rows, notes = compare(then, now, {"tickets.acc": 0.40}, {"tickets.acc": 0.30}, {"tickets": False}, 0.02)
    (row,) = rows
    assert row.basis == "aggregate" and row.changed_items is None and row.n is None
    assert row.at_release == 0.40 and row.now == 0.30
    assert row.delta == pytest.approx(-0.10) and row.drifted
    assert any("evalset 'tickets' changed since the release" in n for n in notes)


def test_each_evalset_is_judged_by_its_own_digest() -> None:
    then = {"a.acc": _items(4), "b.acc": _items(4)}
    now = {"a.acc": _items(4), "b.acc": _items(4)}
    rows, notes = compare(then, now, {"a.acc": 1.0, "b.acc": 0.9}, {}, {"a": True, "b": False}, 0.02)
    by = {r.metric: r for r in rows}
    assert by["a.acc"].basis == "items" and not by["a.acc"].drifted
    assert by["b.acc"].basis == "aggregate" and by["b.acc"].now == 1.0  # mean of tonight's items
    assert by["b.acc"].drifted
    assert len(notes) == 1 and "'b'" in notes[0]


def test_an_evalset_new_since_the_release_has_no_baseline_and_no_drift() -> None:
    now = {"fresh.acc": _items(4)}
    (row,), notes = compare({}, now, {}, {"fresh.acc": 1.0}, {"fresh": False}, 0.02)
    assert row.at_release is None and row.delta is None and not row.drifted
    assert notes == ["evalset 'fresh' has no results in the release run (added since?)"]


def test_a_metric_the_release_did_not_measure_has_no_baseline() -> None:
    then = {"tickets.acc": _items(4)}
    now = {"tickets.acc": _items(4), "tickets.new_scorer": _items(4, 0.0)}
    rows, notes = compare(then, now, {"tickets.acc": 1.0}, {}, {"tickets": True}, 0.02)
    new = next(r for r in rows if r.metric == "tickets.new_scorer")
    assert new.delta is None and not new.drifted
    assert any("tickets.new_scorer: not measured by the release run" in n for n in notes)


def test_shadow_aggregates_are_not_compared() -> None:
    now = {"shadow.agreement_exact": {"x": 1.0}, "tickets.acc": _items(2)}
    rows, _ = compare({"tickets.acc": _items(2)}, now, {}, {}, {"tickets": True, "shadow": True}, 0.02)
    assert [r.metric for r in rows] == ["tickets.acc"]


def test_drift_report_dict_is_json_and_leaves_out_the_bulk() -> None:
    row = DriftRow("tickets.acc", 0.5, 0.4, -0.1, None, True, "aggregate")
    report = DriftReport(
        APP, "3", "run", "drift", [row], notes=["n"], metrics_now={"x": 1.0}, items_now={"a": {"b": 1.0}}
    )
    out = json.loads(json.dumps(report.to_dict()))
    assert out["status"] == "drift" and out["drifted_metrics"] == ["tickets.acc"]
    assert out["rows"][0]["delta"] == -0.1
    assert "items_now" not in out and "metrics_now" not in out


def test_negative_tolerance_is_refused_before_anything_runs(tmp_path: Path) -> None:
    from llmrelease.flows.nightly import nightly

    with pytest.raises(InputError, match="tolerance must be >= 0, got -0.1"):
        nightly(tmp_path, [], -0.1)


# ------------------------------------------------------------------------- MLflow, no model needed


@pytest.fixture
def small_project(tmp_path: Path) -> Path:
    from tests.conftest import copy_project

    return copy_project(tmp_path / "project", guard=False, shadow=False)


def test_no_champion_gives_none_and_a_hand_registered_champion_is_unknown(
    small_project: Path, tmp_path: Path
) -> None:
    from llmrelease.mlflow_registry import TAG, MlflowRegistry
    from llmrelease.project import load_app
    from llmrelease.tasks.promotion.nightly import check_champion, log_drift

    registry = MlflowRegistry(f"sqlite:///{tmp_path}/mlflow.db", artifact_root=(tmp_path / "a").as_uri())
    spec = load_app(small_project, APP)

    def no_engine(*_: object) -> None:
        raise AssertionError("nothing should be evaluated")

    assert check_champion(registry, spec, [], engine_factory=no_engine) is None

    pv, _ = registry.ensure_prompt_version(
        APP, spec.prompt.template(), content_hash="h", commit_message="by hand", tags={}
    )
    version, _ = registry.ensure_model_version(
        APP, candidate_key="by-hand", prompt_version=pv, params={}, tags={}
    )
    registry.client.set_registered_model_alias(APP, "champion", version.version)

    report = check_champion(registry, spec, [], engine_factory=no_engine)
    assert report is not None and report.status == "unknown"
    assert report.rows == [] and "no llmrelease release run" in report.notes[0]

    run_id = log_drift(registry, spec, report)
    run = registry.client.get_run(run_id)
    assert run.data.tags[TAG + "kind"] == "nightly" and run.data.tags[TAG + "drift"] == "unknown"
    tags = registry.alias(APP, "champion").tags
    assert tags[TAG + "drift"] == "unknown" and tags[TAG + "nightly_run_id"] == run_id


@pytest.mark.flow  # Prefect tasks run against a temporary API server (~7 s), no model
def test_one_bad_app_does_not_stop_the_others(small_project: Path, tmp_path: Path, monkeypatch) -> None:
    from llmrelease.flows.nightly import nightly

    monkeypatch.setenv("LLMRELEASE_ENGINE_FACTORY", "llmrelease.engines.instant:instant_engine")
    (small_project / "registry" / "aaa-broken").mkdir()  # sorts first: checked before the good app
    with pytest.raises(NightlyFailed, match="1 app\\(s\\) could not be checked: aaa-broken") as info:
        nightly(small_project, None, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    apps = info.value.result["apps"]
    assert apps["aaa-broken"]["status"] == "error" and "file not found" in apps["aaa-broken"]["error"]
    assert apps[APP] == {"status": "no_champion"}


# ------------------------------------------------------------------------------- real vLLM, e2e


@pytest.mark.e2e
@pytest.mark.reuse_generations  # the release's; the nightly never reads checkpoints
def test_nightly_finds_no_drift_then_drift_after_the_labels_change(
    small_project: Path, tmp_path: Path, monkeypatch
) -> None:
    """One release (evaluation 1), a nightly on the same evalset (2: greedy, so identical), then a
    nightly after several reference labels were changed (3: the digest changes, accuracy drops)."""
    from llmrelease.flows.nightly import nightly
    from llmrelease.flows.release import release
    from llmrelease.mlflow_registry import TAG, MlflowRegistry

    monkeypatch.delenv("LLMRELEASE_ENGINE_FACTORY", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    outcome = release(APP, project=small_project, tracking_uri=uri)
    assert outcome.status == "promoted", outcome.notes
    champion = outcome.champion_after

    out = nightly(small_project, [APP], 0.02, tracking_uri=uri)
    report = out["apps"][APP]
    assert report["status"] == "ok", report
    assert report["champion_version"] == champion and report["release_run_id"] == outcome.run_id
    rows = {r["metric"]: r for r in report["rows"]}
    acc = rows["tickets.category_accuracy"]
    assert acc["basis"] == "items" and acc["n"] == 72
    assert acc["delta"] == 0.0 and acc["changed_items"] == 0  # greedy decoding: the same answers
    assert report["failed_gates"] == [] and out["drift"] == []

    registry = MlflowRegistry(uri)
    run = registry.client.get_run(report["nightly_run_id"])
    assert run.info.run_name == f"{APP}-nightly-v{champion}"
    assert run.data.tags[TAG + "kind"] == "nightly" and run.data.tags[TAG + "drift"] == "false"
    assert run.data.metrics["drift.tickets.category_accuracy"] == 0.0
    assert run.data.metrics["now.tickets.category_accuracy"] == acc["now"]
    logged = registry.load_artifact_dict(run.info.run_id, "nightly/drift.json")
    assert logged["status"] == "ok"
    tags = registry.alias(APP, "champion").tags
    assert tags[TAG + "drift"] == "false" and tags[TAG + "nightly_at"].endswith("+00:00")

    # Relabel tickets the champion got right: its accuracy on the new labels drops by k/72.
    from llmrelease.tasks.evaluation.items import scores_from_json

    stored = registry.load_artifact_dict(outcome.run_id, "item_scores.json")
    right = scores_from_json(stored)["tickets.category_accuracy"]
    flip = sorted(i for i, s in right.items() if s == 1.0)[:8]
    assert len(flip) >= 4, "the champion should get a few tickets right"
    path = small_project / "evalsets" / APP / "tickets.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in lines:
        if row["id"] in flip:
            category = row["reference"]["category"]
            row["reference"]["category"] = "billing" if category != "billing" else "shipping"
    path.write_text("".join(json.dumps(row) + "\n" for row in lines))

    # Through the command line this time (the flow underneath): exit 1 means drift.
    from typer.testing import CliRunner

    from llmrelease.cli import app as cli_app

    ran = CliRunner().invoke(
        cli_app, ["nightly", APP, "--project", str(small_project), "--tracking-uri", uri, "--json"]
    )
    assert ran.exit_code == 1, ran.output
    out = json.loads(ran.stdout)
    report = out["apps"][APP]
    assert report["status"] == "drift" and out["drift"] == [APP]
    acc = {r["metric"]: r for r in report["rows"]}["tickets.category_accuracy"]
    assert acc["basis"] == "aggregate" and acc["changed_items"] is None
    assert acc["delta"] == pytest.approx(-len(flip) / 72) and acc["drifted"]
    assert "tickets.category_accuracy" in report["drifted_metrics"]
    assert any("evalset 'tickets' changed since the release" in n for n in report["notes"])
    tags = registry.alias(APP, "champion").tags
    assert tags[TAG + "drift"] == "true" and tags[TAG + "nightly_run_id"] == report["nightly_run_id"]
    assert registry.alias(APP, "champion").version == champion  # nothing moved


def test_nightly_table_shows_every_status() -> None:
    """An app without a champion (status no_champion) once broke the table: '[]no_champion[/]' is
    not valid rich markup."""
    from llmrelease.report import console, nightly_table

    result = {
        "apps": {
            "new-app": {"status": "no_champion"},
            "broken": {"status": "error", "error": "file not found"},
            APP: {
                "status": "drift",
                "champion_version": "3",
                "rows": [{"metric": "tickets.category_accuracy", "delta": -0.111, "drifted": True}],
                "failed_gates": [{"name": "floor"}],
            },
        }
    }
    c = console()
    with c.capture() as out:
        c.print(nightly_table(result))
    text = out.get()
    assert "no_champion" in text and "file not found" in text
    assert "v3" in text and "tickets.category_accuracy -0.111, gate floor" in text
