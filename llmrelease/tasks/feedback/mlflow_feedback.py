"""Production traces in MLflow, with their assessments, read as traffic records.

Apps traced with MLflow keep their requests, answers and user feedback there (``mlflow.log_feedback``
/ ``mlflow.log_expectation`` on the trace), not in a JSONL log. This turns an experiment's traces
into the same :class:`~llmrelease.specs.TrafficRecord` a log line gives, so the harvest does not
care where the feedback came from. Every trace counts: one without feedback is still a request.

What is read from a trace:

* the request: the root span's inputs, as chat ``messages`` or as the app's template variables;
* the answer: the root span's outputs as text. MLflow's span storage hands back a JSON-text answer
  parsed; trace metadata ``mlflow.traceOutputs`` says whether it was text, and then the stored text
  is used as it was;
* who answered: tags or metadata ``llmrelease.model_version`` / ``llmrelease.prompt_version`` /
  ``llmrelease.alias``, else the logged model MLflow linked the trace to (metadata ``mlflow.modelId``,
  set by ``mlflow.set_active_model``), mapped to its registered version by the caller;
* feedback: the latest valid Feedback assessment not from an LLM judge (a judge's verdict is not
  what a user said) gives score, reason and giver; an Expectation gives the correction.

Traces tagged ``llmrelease.evalset`` are the pipeline's own evaluation items
(:mod:`llmrelease.mlflow_traces`), not traffic: they are left out and counted in one line. Anything
else that cannot be read is listed in ``skipped`` with why, never guessed.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from llmrelease.specs import Feedback, Message, RecordedOutput, ServedBy, TrafficRecord

__all__ = ["traces_as_records", "SERVED_KEYS", "EXPECTATION_NAMES"]

SERVED_KEYS = {
    "llmrelease.model_version": "model_version",
    "llmrelease.prompt_version": "prompt_version",
    "llmrelease.alias": "alias",
}
EXPECTATION_NAMES = ("expected_response", "correction", "expected")
"""Expectation names taken first, in this order; any other expectation after them."""
_THUMBS = {"up": "up", "thumbs_up": "up", "down": "down", "thumbs_down": "down"}
_PAGE = 500
_EVAL_TAG = "llmrelease.evalset"  # llmrelease.mlflow_traces.TAG_EVALSET (not imported: keep this light)


def traces_as_records(
    tracking_uri: str,
    experiment_id: str,
    app: str,
    *,
    variables: list[str],
    logged_models: dict[str, str],
    max_traces: int = 100_000,
) -> tuple[list[TrafficRecord], list[str]]:
    """The experiment's traces as traffic records (oldest first) and why some traces or
    assessments were skipped. ``logged_models``: logged model id -> registered model version.
    At most the newest ``max_traces`` traces are read; a line in ``skipped`` says when there were more."""
    if max_traces < 1:
        raise ValueError(f"max_traces must be at least 1, not {max_traces}")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    records: dict[str, TrafficRecord] = {}
    skipped: list[str] = []
    evaluation = 0
    seen: set[str] = set()
    token = None
    while len(seen) < max_traces:
        # Newest first (MLflow's order): a trace written while paging shifts the offsets, so one may
        # come twice (seen), none is missed.
        page = client.search_traces(
            locations=[experiment_id],
            max_results=min(_PAGE, max_traces - len(seen)),
            page_token=token,
            include_spans=True,
        )
        for trace in page:
            trace_id = trace.info.trace_id
            if trace_id in seen:
                continue
            seen.add(trace_id)
            if _EVAL_TAG in trace.info.tags:
                evaluation += 1
                continue
            record = _record(trace, app, variables, logged_models, skipped)
            if record is not None:
                records[trace_id] = record
        token = page.token
        if not token:
            break
    if token and client.search_traces(
        locations=[experiment_id], max_results=1, page_token=token, include_spans=False
    ):
        skipped.append(
            f"experiment {experiment_id}: more than {max_traces} traces; the newest {max_traces} were read"
        )
    if evaluation:
        skipped.append(
            f"{evaluation} evaluation trace(s) (tag {_EVAL_TAG}) left out: they are not production traffic"
        )
    return sorted(records.values(), key=lambda r: (r.timestamp, r.trace_id or "")), skipped


def _record(
    trace: Any, app: str, variables: list[str], logged_models: dict[str, str], skipped: list[str]
) -> TrafficRecord | None:
    info = trace.info
    tid = info.trace_id
    root = next((s for s in trace.data.spans if s.parent_id is None), None)
    if root is None:
        skipped.append(f"trace {tid}: has no root span (its request was not stored)")
        return None
    request: dict[str, Any] = {}
    inputs = root.inputs
    try:
        if isinstance(inputs, dict) and isinstance(inputs.get("messages"), list):
            request["messages"] = [_message(m) for m in inputs["messages"]]
        elif isinstance(inputs, dict) and all(isinstance(inputs.get(v), str) for v in variables):
            request["vars"] = {v: inputs[v] for v in variables}
        else:
            names = ", ".join(variables) or "(the prompt has none)"
            skipped.append(f"trace {tid}: request has neither 'messages' nor the template variables {names}")
            return None
    except (TypeError, ValueError) as exc:
        skipped.append(f"trace {tid}: request 'messages' are not chat messages ({_first_error(exc)})")
        return None
    try:
        served = _served(info, logged_models)
    except ValidationError as exc:
        skipped.append(f"trace {tid}: which release served it is unreadable ({_first_error(exc)})")
        return None
    output = _output_text(root.outputs, trace.data.response, info.trace_metadata.get("mlflow.traceOutputs"))
    latency = info.execution_duration / 1000 if info.execution_duration is not None else None
    return TrafficRecord(
        id=tid,
        trace_id=tid,
        timestamp=datetime.fromtimestamp(info.request_time / 1000, tz=UTC),
        app=app,
        champion=RecordedOutput(output=output, latency_s=latency) if output is not None else None,
        served=served,
        feedback=_feedback(tid, info.assessments, skipped),
        **request,
    )


def _message(m: Any) -> Message:
    if not isinstance(m, dict):
        raise TypeError(f"a message is {type(m).__name__}, not an object with role and content")
    return Message(role=m.get("role"), content=m.get("content"))


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        return f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
    return str(exc)


def _output_text(value: Any, raw: str | None, recorded: str | None) -> str | None:
    """The answer as text. ``raw``: the root span's stored outputs; ``recorded``: the (truncated)
    JSON of the outputs as traced, which starts with a quote when the answer was text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if recorded is not None and recorded.startswith('"') and raw is not None:
        return raw  # a JSON text answer: MLflow gives it back parsed, ``raw`` is the text as it was
    if isinstance(value, dict):
        for key in ("content", "output", "text"):
            if isinstance(value.get(key), str):
                return value[key]
        try:
            content = value["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            content = None
        if isinstance(content, str):
            return content
    return raw if raw is not None else json.dumps(value, ensure_ascii=False)


def _served(info: Any, logged_models: dict[str, str]) -> ServedBy | None:
    given: dict[str, Any] = {}
    for source in (info.trace_metadata, info.tags):  # tags (mutable, set later) win over metadata
        given.update({field: source[key] for key, field in SERVED_KEYS.items() if source.get(key)})
    model_id = info.trace_metadata.get("mlflow.modelId")
    if "model_version" not in given and model_id in logged_models:
        given["model_version"] = logged_models[model_id]
    return ServedBy(**given) if given else None


def _feedback(tid: str, assessments: list[Any], skipped: list[str]) -> Feedback | None:
    """The latest usable feedback's score, and the correction by name (EXPECTATION_NAMES), then latest."""
    scored: list[tuple[int, str | int, Any]] = []  # (created ms, score, assessment)
    expected: list[tuple[int, int, Any]] = []  # (name rank, -created ms, assessment)
    for a in assessments:
        if a.valid is False:  # overridden by a later assessment
            continue
        if a.feedback is not None and str(a.source.source_type).upper() != "LLM_JUDGE":
            score = _score(a.feedback.value)
            if score is None:
                problem = a.feedback.error.error_message if a.feedback.error else repr(a.feedback.value)
                skipped.append(f"trace {tid}: feedback '{a.name}' is not a thumb or a 1-5 rating ({problem})")
                continue
            scored.append((a.create_time_ms or 0, score, a))
        elif a.expectation is not None:
            value = a.expectation.value
            if not (isinstance(value, dict) or (isinstance(value, str) and value.strip())):
                skipped.append(
                    f"trace {tid}: expectation '{a.name}' is neither text nor a JSON object ({value!r})"
                )
                continue
            rank = EXPECTATION_NAMES.index(a.name) if a.name in EXPECTATION_NAMES else len(EXPECTATION_NAMES)
            expected.append((rank, -(a.create_time_ms or 0), a))
    if not scored and not expected:
        return None
    latest = max(scored, key=lambda s: s[0])[2] if scored else None
    correction = min(expected, key=lambda e: e[:2])[2] if expected else None
    given = latest or correction
    giver = given.source.source_id
    return Feedback(
        score=_score(latest.feedback.value) if latest else None,
        correction=correction.expectation.value if correction else None,
        reason=latest.rationale[:2000] if latest and latest.rationale else None,
        by=giver if giver and giver != "default" else None,  # "default": MLflow's id when none was given
        at=datetime.fromtimestamp(given.create_time_ms / 1000, tz=UTC) if given.create_time_ms else None,
    )


def _score(value: Any) -> str | int | None:
    if isinstance(value, bool):
        return "up" if value else "down"
    if isinstance(value, int) and 1 <= value <= 5:
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and 1 <= value <= 5:
        return int(value)
    if isinstance(value, str):
        return _THUMBS.get(value.strip().lower())
    return None
