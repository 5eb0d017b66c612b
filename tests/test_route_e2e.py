"""`llmrelease route`: the demo router on real vLLM, MLflow and Prefect, end to end.

Both routes are the demo's own prompts (zero-shot and few-shot), which the session's demo history
already released: with the session's kept generations and the same chunking, the router reads their
answers back and generates nothing new. Its per-route numbers must then equal those releases'."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmrelease.cli import app
from llmrelease.outcome import EXIT_CODES
from tests.conftest import HISTORY_CHUNK_ROWS, DemoHistory, copy_project

APP = "support-triage"


def run_route(project: Path, generations: Path) -> tuple[int, dict]:
    """``llmrelease route --json`` on the session's kept generations, chunked as the demo history was."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMRELEASE_CHUNK_ROWS", HISTORY_CHUNK_ROWS)
        mp.setenv("LLMRELEASE_CHECKPOINTS", str(generations))
        mp.setenv("LLMRELEASE_KEEP_CHECKPOINTS", "1")
        result = CliRunner().invoke(
            app, ["route", APP, "--project", str(project), "--json"], catch_exceptions=False
        )
    assert result.stdout.strip(), result.stderr
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture(scope="module")
def routed(demo_history: DemoHistory, tmp_path_factory: pytest.TempPathFactory, _session_generations: Path):
    project = copy_project(tmp_path_factory.mktemp("route") / "project")
    code, out = run_route(project, _session_generations)
    return project, code, out


@pytest.mark.e2e
def test_route_reports_every_router_number_with_intervals(routed, demo_history: DemoHistory) -> None:
    _, code, out = routed
    assert (
        out["status"]
        == {"pass": "promoted", "fail": "rejected", "inconclusive": "inconclusive"}[out["decision"]]
    )
    assert code == EXIT_CODES[out["status"]] == out["exit_code"]
    est, ci = out["estimates"], out["intervals"]
    # Each route alone is exactly the release of the same prompt: same items, same greedy answers.
    baseline = demo_history.steps["baseline"][1]["metrics"]["tickets.category_accuracy"]
    improved = demo_history.steps["improved"][1]["metrics"]["tickets.category_accuracy"]
    assert est["routes.zero-shot.quality"] == pytest.approx(baseline)
    assert est["routes.few-shot.quality"] == pytest.approx(improved)
    # The few-shot prompt is ~5x longer: it costs more per request, and an escalation pays both.
    cheap, strong = est["routes.zero-shot.cost_per_1k_requests"], est["routes.few-shot.cost_per_1k_requests"]
    assert 1.5 * cheap < strong
    share = est["router.strong_share"]
    assert abs(share - 0.3) <= 2 / 72  # fitted to target_strong_share 0.3 from the confidences alone
    assert est["router.cost_per_1k_requests"] == pytest.approx(cheap + share * strong, rel=0.05)
    for name in (
        "router.quality",
        "router.apgr",
        "router.cpt50",
        "router.cpt80",
        "router.vs_random",
        "random.quality",
    ):
        low, high = ci[name]
        assert low is not None and low <= est[name] <= high, name
    # ...and on the demo's replayed traffic (shadow.yaml's 40 requests): the share it escalates there,
    # against the target it was released for, and the cascade's cost with the strong route answering
    # only what was escalated.
    traffic = out["traffic"]
    assert traffic["requests"] == 40 and traffic["skipped"] == 0
    assert 0 <= traffic["strong_share"] <= 1 and traffic["within_band"] == (
        abs(traffic["strong_share"] - 0.3) <= 0.1
    )
    assert cheap <= traffic["cost_per_1k_requests"] * 1.5
    assert {g["name"] for g in out["gates"]["gates"]} == {
        "orders-better-than-random",
        "beats-random-at-equal-cost",
        "cost-vs-few-shot",
        "accuracy-vs-few-shot",
    }


@pytest.mark.e2e
def test_route_records_a_router_run_with_the_cost_quality_page(routed) -> None:
    from mlflow.tracking import MlflowClient

    project, _, out = routed
    store = project / ".llmrelease"
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    run = client.get_run(out["run_id"])
    assert run.data.tags["llmrelease.kind"] == "router"
    assert run.data.tags["llmrelease.decision"] == out["decision"]
    assert run.data.tags["llmrelease.router_model_version"] == out["version"]
    assert run.data.params["route.zero-shot.prompt"] == "minimal-v1"
    metrics = run.data.metrics
    assert metrics["router.apgr"] == pytest.approx(out["estimates"]["router.apgr"])
    assert "router.apgr.ci_low" in metrics and "routes.few-shot.tickets.category_accuracy" in metrics
    assert metrics["router.traffic.requests"] == 40
    page = Path(
        client.download_artifacts(out["run_id"], "router/router_report.html", str(project))
    ).read_text()
    assert "<svg" in page and "random router" in page and "APGR" in page
    summary = json.loads(
        Path(client.download_artifacts(out["run_id"], "router/router.json", str(project))).read_text()
    )
    assert len(summary["curve"]["pgr"]) >= 2 and summary["curve"]["pgr"][0] == 0


def test_route_without_a_router_is_a_clear_input_error(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    (project / "registry" / APP / "router.yaml").unlink()
    result = CliRunner().invoke(app, ["route", APP, "--project", str(project)])
    assert result.exit_code == 2
    assert "router.yaml" in result.stderr and "no router" in result.stderr
    assert not (project / ".llmrelease").exists()  # nothing recorded


@pytest.mark.e2e
def test_a_router_that_passes_its_gates_becomes_router_champion_by_compare_and_set(
    demo_history: DemoHistory, tmp_path: Path, _session_generations: Path
) -> None:
    """Promotion is the candidate's transaction on the router's own registered model: a passing
    router becomes champion (challenger cleared, threshold on the version), the same router again
    is already champion (nothing evaluated), and a changed policy is a new version that replaces
    it, the old one becoming previous-champion. The app's own aliases never move."""
    from llmrelease.mlflow_registry import MlflowRegistry

    project = copy_project(tmp_path / "project", shadow=False)  # no traffic: promotion is the point
    router_yaml = project / "registry" / APP / "router.yaml"
    text = router_yaml.read_text()
    gates_at = text.index("gates:")
    # One gate every run here passes by construction: the share escalated stays near its target.
    router_yaml.write_text(
        text[:gates_at] + "gates:\n  - {name: share-bounded, metric: router.strong_share, max: 0.5}\n"
    )
    code, first = run_route(project, _session_generations)
    assert (code, first["status"]) == (0, "promoted"), first.get("note")
    assert first["champion_before"] is None and first["champion_after"] == first["version"] == "1"
    store = project / ".llmrelease"
    reg = MlflowRegistry(f"sqlite:///{store / 'mlflow.db'}", artifact_root=(store / "artifacts").as_uri())
    champion = reg.alias(f"{APP}.router", "champion")
    assert champion is not None and champion.version == "1"
    assert float(champion.tags["llmrelease.router.threshold"]) == pytest.approx(first["threshold"])
    assert reg.alias(f"{APP}.router", "challenger") is None  # cleared by the promotion
    assert reg.alias(APP, "champion") is None  # the app's own model is not the router's

    code, again = run_route(project, _session_generations)
    assert (code, again["status"]) == (0, "already_champion")
    assert "run_id" not in again  # nothing was evaluated

    router_yaml.write_text(
        router_yaml.read_text().replace("target_strong_share: 0.3", "target_strong_share: 0.2")
    )
    code, second = run_route(project, _session_generations)
    assert (code, second["status"]) == (0, "promoted"), second.get("note")
    assert (second["version"], second["champion_before"]) == ("2", "1")
    assert reg.alias(f"{APP}.router", "previous-champion").version == "1"
    assert second["prompt_versions"] == first["prompt_versions"]  # the routes' prompts are found again


@pytest.mark.e2e
def test_nightly_calibrates_the_router_champion_on_recent_traffic(
    demo_history: DemoHistory, tmp_path: Path, _session_generations: Path
) -> None:
    """The nightly replays the traffic sample through the router champion at its threshold: the share
    it escalates is the release's own measurement on the same requests (greedy), it is flagged when
    outside target ± band (drift, exit 1), and the result and re-fitted threshold go on the version.
    Nothing moves and no threshold changes."""
    from llmrelease.mlflow_registry import MlflowRegistry

    project = copy_project(tmp_path / "project")
    router_yaml = project / "registry" / APP / "router.yaml"
    text = router_yaml.read_text()
    router_yaml.write_text(
        text[: text.index("gates:")]
        + "gates:\n  - {name: share-bounded, metric: router.strong_share, max: 0.5}\n"
    )
    code, released = run_route(project, _session_generations)
    assert (code, released["status"]) == (0, "promoted"), released.get("note")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMRELEASE_CHECKPOINTS", str(_session_generations))
        mp.setenv("LLMRELEASE_KEEP_CHECKPOINTS", "1")
        result = CliRunner().invoke(
            app, ["nightly", APP, "--project", str(project), "--json"], catch_exceptions=False
        )
    out = json.loads(result.stdout)
    router = out["apps"][APP]["router"]
    assert router["share"] == pytest.approx(released["traffic"]["strong_share"])
    assert router["threshold"] == pytest.approx(released["threshold"])
    assert router["within_band"] == (abs(router["share"] - 0.3) <= 0.1)
    assert router["status"] == ("ok" if router["within_band"] else "drift")
    assert result.exit_code == (0 if router["within_band"] else 1)
    store = project / ".llmrelease"
    reg = MlflowRegistry(f"sqlite:///{store / 'mlflow.db'}", artifact_root=(store / "artifacts").as_uri())
    champion = reg.alias(f"{APP}.router", "champion")
    assert champion.version == released["version"]  # nothing moved
    assert (
        json.loads(champion.tags["llmrelease.router.calibration"])["refit_threshold"]
        == router["refit_threshold"]
    )
    assert float(champion.tags["llmrelease.router.threshold"]) == pytest.approx(released["threshold"])
    # `status` shows the router's aliases beside the app's, with the last calibration.
    shown = CliRunner().invoke(
        app, ["status", APP, "--project", str(project), "--json"], catch_exceptions=False
    )
    rows = {r["alias"]: r for r in json.loads(shown.stdout)["router"]}
    assert rows["champion"]["version"] == released["version"] and rows["champion"]["decision"] == "pass"
    assert rows["champion"]["calibration"]["share"] == pytest.approx(router["share"])
    table = CliRunner().invoke(app, ["status", APP, "--project", str(project)], catch_exceptions=False)
    assert "support-triage.router: aliases" in table.stdout and "last calibration on traffic" in table.stdout


@pytest.mark.e2e
def test_a_classifier_router_is_released_on_out_of_fold_predictions_and_calibrated_nightly(
    demo_history: DemoHistory, tmp_path: Path, _session_generations: Path
) -> None:
    """``kind: classifier`` on the demo: the routes' numbers are the same releases', the router pays
    one call per request (its cost is a mix of the two routes', never above the strong route's), its
    trained classifier is kept in the run, and the nightly loads it back: the share it sends to the
    strong route on the traffic sample is the release's own on the same requests."""
    from llmrelease.mlflow_registry import MlflowRegistry

    project = copy_project(tmp_path / "project")
    router_yaml = project / "registry" / APP / "router.yaml"
    text = router_yaml.read_text()
    router_yaml.write_text(
        text[: text.index("policy:")]
        + "policy:\n  kind: classifier\n  algorithm: logistic_regression\n  target_strong_share: 0.3\n"
        + text[text.index("quality:") : text.index("gates:")]
        + "gates:\n  - {name: share-bounded, metric: router.strong_share, max: 0.5}\n"
    )
    code, out = run_route(project, _session_generations)
    assert (code, out["status"]) == (0, "promoted"), out.get("note")
    est = out["estimates"]
    cheap, strong = est["routes.zero-shot.cost_per_1k_requests"], est["routes.few-shot.cost_per_1k_requests"]
    share = est["router.strong_share"]
    assert abs(share - 0.3) <= 2 / 72
    # one call per request: the cost is the mix, up to per-item differences in answer length
    assert est["router.cost_per_1k_requests"] == pytest.approx((1 - share) * cheap + share * strong, rel=0.15)
    assert est["router.cost_per_1k_requests"] < strong
    for name in ("router.apgr", "router.vs_random", "router.quality"):
        low, high = out["intervals"][name]
        assert low <= est[name] <= high
    store = project / ".llmrelease"
    reg = MlflowRegistry(f"sqlite:///{store / 'mlflow.db'}", artifact_root=(store / "artifacts").as_uri())
    summary = reg.load_artifact_dict(out["run_id"], "router/router.json")
    assert summary["policy"]["kind"] == "classifier"
    assert summary["classifier"]["trained_on"] == out["items"]
    assert out["traffic"]["requests"] > 0

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMRELEASE_CHECKPOINTS", str(_session_generations))
        mp.setenv("LLMRELEASE_KEEP_CHECKPOINTS", "1")
        result = CliRunner().invoke(
            app, ["nightly", APP, "--project", str(project), "--json"], catch_exceptions=False
        )
    router = json.loads(result.stdout)["apps"][APP]["router"]
    assert router["share"] == pytest.approx(out["traffic"]["strong_share"])
    assert router["threshold"] == pytest.approx(out["threshold"])
    assert router["cost_per_1k_requests"] == pytest.approx(out["traffic"]["cost_per_1k_requests"])
