"""Production traces and their assessments, read back as traffic records from a real SQLite MLflow store."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llmrelease.specs import Feedback, Message, ServedBy
from llmrelease.tasks.feedback.mlflow_feedback import traces_as_records

APP = "tickets"
ANSWER = '{"category": "billing", "urgency": "low"}'


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Fluent tracing pointed at a fresh store for this test only: the URI and experiment from the
    environment (an earlier test's ``mlflow.set_tracking_uri`` / ``set_experiment`` are masked),
    spans exported synchronously, and a tracer provider built for this test and dropped after it."""
    import mlflow
    import mlflow.tracking._tracking_service.utils as tracking_utils
    import mlflow.tracking.fluent as fluent

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("traffic", artifact_location=(tmp_path / "art").as_uri())
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")  # read when the exporter is built
    mlflow.tracing.reset()
    try:
        yield uri, experiment_id
    finally:
        mlflow.flush_trace_async_logging()
        mlflow.tracing.reset()


def test_traces_become_traffic_records(store) -> None:
    import mlflow
    from mlflow.entities import AssessmentSource
    from mlflow.entities import Feedback as MlflowFeedback

    uri, experiment_id = store
    started = datetime.now(UTC)

    @mlflow.trace
    def triage(ticket: str, locale: str = "en") -> str:
        return ANSWER

    @mlflow.trace
    def chat(messages: list[dict]) -> dict:
        return {"choices": [{"message": {"role": "assistant", "content": "Reset it from Settings."}}]}

    @mlflow.trace
    def ask(question: str) -> str:
        return "no idea"

    @mlflow.trace
    def tagged(ticket: str) -> str:
        mlflow.update_current_trace(
            tags={"llmrelease.model_version": "3"}, metadata={"llmrelease.prompt_version": "2"}
        )
        return "billing"

    @mlflow.trace
    def raw_json(ticket: str) -> str:
        return '{"text":"kept whole"}'  # JSON text with a 'text' field: the answer is the whole text

    @mlflow.trace
    def unattributable(ticket: str) -> str:
        mlflow.update_current_trace(tags={"llmrelease.prompt_version": "2"})  # no model version
        return "billing"

    @mlflow.trace
    def evaluation_item(ticket: str) -> str:
        mlflow.update_current_trace(tags={"llmrelease.evalset": "tickets"})
        return "billing"

    def traced(fn, *args) -> str:
        fn(*args)
        return mlflow.get_last_active_trace_id()

    t_vars = traced(triage, "I was charged twice")
    t_chat = traced(
        chat, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Forgot my password"}]
    )
    t_bad = traced(ask, "what is this?")
    t_tool = traced(chat, [{"role": "tool", "content": "{}"}])
    t_unattributable = traced(unattributable, "Invoice missing")
    t_tags = traced(tagged, "Refund please")
    model = mlflow.create_external_model(name="tickets-model", experiment_id=experiment_id)
    with mlflow.set_active_model(model_id=model.model_id):
        t_model = traced(raw_json, "Where is my parcel?")
    traced(evaluation_item, "an evalset row")

    human = AssessmentSource(source_type="HUMAN", source_id="agent-1")
    # An earlier thumbs-up, stamped a minute back: the later thumbs-down must win, whatever the clock.
    earlier = int(time.time() * 1000) - 60_000
    mlflow.log_assessment(
        t_vars,
        MlflowFeedback(
            name="user_feedback",
            value=True,
            source=AssessmentSource(source_type="HUMAN", source_id="agent-0"),
            create_time_ms=earlier,
        ),
    )
    down = mlflow.log_feedback(
        trace_id=t_vars, name="user_feedback", value=False, rationale="wrong team", source=human
    )
    mlflow.log_expectation(
        trace_id=t_vars, name="expected_response", value={"category": "billing", "urgency": "low"}
    )
    mlflow.log_expectation(trace_id=t_vars, name="notes", value="a lower-ranked expectation")
    rating = mlflow.log_feedback(
        trace_id=t_chat, name="rating", value=4, source=AssessmentSource("HUMAN", "user-7")
    )
    mlflow.log_feedback(  # a judge's verdict is not user feedback: ignored, not reported
        trace_id=t_chat, name="relevance", value="yes", source=AssessmentSource("LLM_JUDGE", "gpt-judge")
    )
    mlflow.log_feedback(trace_id=t_tags, name="thumbs", value="thumbs_up", source=human)
    mlflow.log_feedback(trace_id=t_tags, name="mood", value="meh", source=human)  # invalid: skipped
    mlflow.log_feedback(trace_id=t_bad, name="thumbs", value=True, source=human)

    records, skipped = traces_as_records(
        uri, experiment_id, APP, variables=["ticket"], logged_models={model.model_id: "5"}
    )
    finished = datetime.now(UTC)

    by_id = {r.id: r for r in records}
    assert set(by_id) == {t_vars, t_chat, t_tags, t_model}
    assert [r.id for r in records] == [r.id for r in sorted(records, key=lambda r: (r.timestamp, r.id))]
    for r in records:
        assert r.trace_id == r.id and r.app == APP
        assert r.timestamp.tzinfo is not None and started.replace(microsecond=0) <= r.timestamp <= finished
        assert r.champion is not None and r.champion.latency_s is not None and r.champion.latency_s >= 0

    r = by_id[t_vars]
    assert r.vars == {"ticket": "I was charged twice"} and r.messages is None  # 'locale' is no variable
    assert r.champion.output == ANSWER and json.loads(r.champion.output)["category"] == "billing"
    assert r.served is None
    assert r.feedback == Feedback(
        score="down",
        correction={"category": "billing", "urgency": "low"},
        reason="wrong team",
        by="agent-1",
        at=datetime.fromtimestamp(down.create_time_ms / 1000, tz=UTC),
    )
    assert r.feedback.negative

    r = by_id[t_chat]
    assert r.vars is None
    assert r.messages == [
        Message(role="system", content="Be brief."),
        Message(role="user", content="Forgot my password"),
    ]
    assert r.champion.output == "Reset it from Settings."
    assert r.served is None
    assert r.feedback == Feedback(
        score=4, by="user-7", at=datetime.fromtimestamp(rating.create_time_ms / 1000, tz=UTC)
    )

    r = by_id[t_tags]
    assert r.vars == {"ticket": "Refund please"}
    assert r.champion.output == "billing"
    assert r.served == ServedBy(model_version="3", prompt_version=2)
    assert r.feedback is not None and (r.feedback.score, r.feedback.by) == ("up", "agent-1")
    assert r.feedback.reason is None and r.feedback.correction is None

    r = by_id[t_model]
    assert r.champion.output == '{"text":"kept whole"}'
    assert r.served == ServedBy(model_version="5")
    assert r.feedback is None  # no assessments: still a request

    # Traces are read newest first, and two traces may share a millisecond: compare as sets.
    assert sorted(skipped) == sorted(
        [
            f"trace {t_tags}: feedback 'mood' is not a thumb or a 1-5 rating ('meh')",
            f"trace {t_bad}: request has neither 'messages' nor the template variables ticket",
            f"trace {t_tool}: request 'messages' are not chat messages "
            "(role: Input should be 'system', 'user' or 'assistant')",
            f"trace {t_unattributable}: which release served it is unreadable "
            "(Value error, give the 'alias' or the 'model_version' that answered (or leave 'served' out))",
            "1 evaluation trace(s) (tag llmrelease.evalset) left out: they are not production traffic",
        ]
    )

    # A logged model the caller does not know: nothing said about who served it.
    records, _ = traces_as_records(uri, experiment_id, APP, variables=["ticket"], logged_models={})
    assert {r.id: r.served for r in records}[t_model] is None


def test_max_traces_reads_the_newest_and_says_so(store) -> None:
    import mlflow

    uri, experiment_id = store

    @mlflow.trace
    def triage(ticket: str) -> str:
        return "billing"

    ids = []
    for i in range(3):
        triage(f"ticket {i}")
        ids.append(mlflow.get_last_active_trace_id())

    records, skipped = traces_as_records(
        uri, experiment_id, APP, variables=["ticket"], logged_models={}, max_traces=2
    )
    newest = sorted(
        mlflow.MlflowClient(uri).search_traces(locations=[experiment_id], include_spans=False),
        key=lambda t: (-t.info.request_time, t.info.trace_id),
    )
    assert len(records) == 2 and {r.id for r in records} <= set(ids)
    assert skipped == [f"experiment {experiment_id}: more than 2 traces; the newest 2 were read"]
    assert min(r.timestamp for r in records).timestamp() * 1000 >= newest[2].info.request_time

    records, skipped = traces_as_records(
        uri, experiment_id, APP, variables=["ticket"], logged_models={}, max_traces=3
    )
    assert {r.id for r in records} == set(ids) and skipped == []


@pytest.mark.flow
def test_harvest_reads_feedback_from_mlflow_traces(
    store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`llmrelease harvest --traces EXPERIMENT` on a project without a traffic log: the traces'
    requests and assessments become the snapshots, scrubbed, each row naming its trace."""
    import mlflow
    from mlflow.entities import AssessmentSource
    from typer.testing import CliRunner

    from llmrelease.cli import app
    from tests.conftest import copy_project

    uri, experiment_id = store
    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    monkeypatch.setenv("LLMRELEASE_ARTIFACT_ROOT", (tmp_path / "artifacts").as_uri())

    @mlflow.trace
    def triage(ticket: str) -> str:
        return '{"category": "technical", "urgency": "low"}'

    triage("My card 4111 1111 1111 1111 was charged twice, mail me at ann@example.org")
    wrong = mlflow.get_last_active_trace_id()
    triage("The app crashes on start")
    right = mlflow.get_last_active_trace_id()
    human = AssessmentSource(source_type="HUMAN", source_id="agent-9")
    mlflow.log_feedback(trace_id=wrong, name="user_feedback", value=False, rationale="billing", source=human)
    mlflow.log_expectation(
        trace_id=wrong, name="expected_response", value={"category": "billing", "urgency": "high"}
    )
    mlflow.log_feedback(trace_id=right, name="user_feedback", value=True, source=human)

    args = [
        "harvest",
        "support-triage",
        "--project",
        str(project),
        "--tracking-uri",
        uri,
        "--traces",
        "traffic",
    ]
    r = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    s = out["summary"]
    assert s["requests"] == 2 and s["feedback"] == 2 and s["lines_read"] == 0
    assert s["traffic"] == "mlflow traces of experiment 'traffic'"
    [row] = [json.loads(line) for line in Path(out["files"]["regression"]).read_text().splitlines()]
    assert row["reference"] == {"category": "billing", "urgency": "high"}
    assert row["meta"]["trace_id"] == wrong and row["meta"]["request_id"] == wrong
    assert row["vars"]["ticket"] == "My card <CREDIT_CARD> was charged twice, mail me at <EMAIL_ADDRESS>"
    # Nothing says which version answered (no tags, no linked model, no champion history): listed.
    assert {u["id"] for u in s["unattributed"]} == {wrong, right}
    assert all(u["line"] is None for u in s["unattributed"])
    missing = CliRunner().invoke(
        app,
        ["harvest", "support-triage", "--project", str(project), "--tracking-uri", uri, "--traces", "nope"],
    )
    assert missing.exit_code == 2 and "no MLflow experiment 'nope'" in missing.stderr
