"""Evaluated items as MLflow 3 GenAI evaluation records: one trace per item, with assessments.

Each item becomes one trace in the run's experiment, written straight to the tracking store (SQL
store or ``mlflow server``) with the same records ``mlflow.genai.evaluate`` writes, so MLflow's
evaluation views list, filter and compare them item by item:

* one root span (type LLM) with the item's vars as inputs and the model's text as output, lasting
  the item's latency; latency, TTFT and token counts as span attributes (``mlflow.chat.tokenUsage``
  gives the trace its token columns);
* trace metadata ``mlflow.sourceRun`` (the release run) and ``mlflow.modelId`` (the candidate's
  LoggedModel), plus a run link (what the run's evaluation tab lists);
* trace tags ``llmrelease.evalset`` / ``llmrelease.item_id`` / ``llmrelease.item_tags``, client
  request id ``<evalset>/<id>``, trace name = the evalset;
* the prompt version: tag ``mlflow.linkedPrompts`` and the store's trace-prompt link (what the
  ``prompt = "name/version"`` search filter uses);
* assessments written with the trace: a Feedback per score and per label (source CODE,
  ``llmrelease``; a None/NaN score as a Feedback with an error) and the reference as the
  Expectation ``expected_response``;
* the request preview ``{"item": "<evalset>/<id>", <vars>}``: MLflow's run comparison pairs the
  two runs' traces by it, so items with equal inputs (or a long common prefix) still pair right.

An output text that is itself JSON (an object, array or quoted string) is stored parsed: MLflow's
span storage strips one JSON layer from such values. :func:`item_traces` gives it back as JSON text.

No fluent tracing is used: no global tracer, tracking URI, active run or experiment is touched, and
nothing is exported asynchronously: every write has returned when :func:`log_item_traces` returns.
Trace and assessment ids are derived from (run, evalset, item id), so logging the same items to the
same run again (a retry after a crash) updates them instead of adding duplicates.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any

from llmrelease.runtime import preserved_environ

__all__ = ["SOURCE_ID", "EXPECTATION", "log_item_traces", "item_traces", "trace_id_for"]

SOURCE_ID = "llmrelease"
EXPECTATION = "expected_response"  # MLflow's name for a reference answer (used by its judges)
TAG_EVALSET, TAG_ITEM_ID, TAG_ITEM_TAGS = "llmrelease.evalset", "llmrelease.item_id", "llmrelease.item_tags"
_RUN_LINKS_PER_CALL = 100  # the stores' limit for link_traces_to_run
_PREVIEW = 1000  # MLflow's request/response preview length (open source)
_REMOTE_THREADS = 8


def trace_id_for(run_id: str, evalset: str, item_id: str) -> str:
    """The trace id of an item in a run: ``tr-`` and 32 hex digits, stable across retries."""
    return "tr-" + hashlib.sha256(f"{run_id}\0{evalset}\0{item_id}".encode()).hexdigest()[:32]


def log_item_traces(
    tracking_uri: str,
    *,
    experiment_id: str,
    run_id: str,
    model_id: str | None,
    prompt_uri: str | None,
    items: Iterable[Mapping[str, Any]],
    chunk_size: int = 200,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Log one trace per item, linked to ``run_id`` (and the model and prompt version when given).

    ``items`` is consumed ``chunk_size`` at a time; nothing of a chunk is kept after it is written.
    ``progress`` is called with the number of items written so far after each chunk.
    ``prompt_uri``: ``prompts:/<name>/<version>`` (or ``@<alias>``). Returns the number of traces."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    from mlflow import MlflowClient
    from mlflow.tracing.client import TracingClient

    with preserved_environ("MLFLOW_TRACKING_URI"):
        client = TracingClient(tracking_uri)
        prompt = _prompt_version(MlflowClient(tracking_uri, registry_uri=tracking_uri), prompt_uri)
    store = client.store
    # A server answers one request a trace (its info, its prompt link): a few at a time hide the
    # round trips. A local SQL store is written one transaction at a time anyway.
    remote = tracking_uri.startswith(("http://", "https://"))
    pool = ThreadPoolExecutor(_REMOTE_THREADS, thread_name_prefix="llmrelease-traces") if remote else None
    fixed_tags = {}
    if prompt is not None:
        linked = [{"name": prompt.name, "version": str(prompt.version)}]
        fixed_tags["mlflow.linkedPrompts"] = json.dumps(linked)
    done = 0
    try:
        for chunk in _chunks(items, chunk_size):
            built = [_build(item, experiment_id, run_id, model_id, fixed_tags) for item in chunk]
            del chunk
            _write_chunk(client, store, pool.map if pool else map, experiment_id, run_id, prompt, built)
            done += len(built)
            del built
            if progress is not None:
                progress(done)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return done


def item_traces(tracking_uri: str, run_id: str) -> list[dict[str, Any]]:
    """The run's item traces, read back: trace id, evalset, id, inputs, output, item tags, model id,
    linked prompts and assessments (``{name: value}``; expectations under ``expectations``)."""
    from mlflow.tracing.client import TracingClient

    with preserved_environ("MLFLOW_TRACKING_URI"):
        client = TracingClient(tracking_uri)
    experiment_id = client.store.get_run(run_id).info.experiment_id
    out: list[dict[str, Any]] = []
    token = None
    while True:
        page = client.search_traces(
            locations=[experiment_id], run_id=run_id, max_results=500, page_token=token, include_spans=True
        )
        for trace in page:
            out.append(_describe(trace))
        token = page.token
        if not token:
            return out


# ------------------------------------------------------------------------------------- internals


def _chunks(items: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _prompt_version(client: Any, prompt_uri: str | None) -> Any:
    if not prompt_uri:
        return None
    name, version = client.parse_prompt_uri(prompt_uri)
    pv = client.get_prompt_version(name, version)
    if pv is None:
        from llmrelease.errors import InfrastructureError

        raise InfrastructureError(f"prompt version {prompt_uri} does not exist in the registry")
    return pv


def _write_chunk(
    client: Any, store: Any, each: Callable, experiment_id: str, run_id: str, prompt: Any, built: list
) -> None:
    """Each trace's info with its assessments, then all spans in one call, then the run links
    (100 a call) and the prompt links (one a trace). Trace info first: written the other way round,
    every trace row created by the spans is re-read and merged again (~5x slower on SQLite)."""
    returned = list(each(store.start_trace, [info for info, _ in built]))
    try:
        store.log_spans(experiment_id, [span for _, span in built])
    except Exception as exc:
        # A store without span storage (file store, server older than 3.4, file-store server):
        # the spans go to the trace's artifact location instead, as MLflow's exporter does.
        if not isinstance(exc, NotImplementedError) and "span logging is not supported" not in str(exc):
            raise
        from mlflow.entities.trace_data import TraceData

        for ret, (_, span) in zip(returned, built, strict=True):
            client._upload_trace_data(ret, TraceData(spans=[span]))
    ids = [info.trace_id for info, _ in built]
    for i in range(0, len(ids), _RUN_LINKS_PER_CALL):
        store.link_traces_to_run(ids[i : i + _RUN_LINKS_PER_CALL], run_id=run_id)
    if prompt is not None:
        list(each(lambda trace_id: store.link_prompts_to_trace(trace_id, [prompt]), ids))


def _build(
    item: Mapping[str, Any], experiment_id: str, run_id: str, model_id: str | None, fixed_tags: dict
) -> tuple[Any, Any]:
    from mlflow.entities import AssessmentSource, Expectation, Feedback, TraceInfo, TraceLocation, TraceState
    from mlflow.entities.assessment import AssessmentError
    from mlflow.entities.span import Span

    evalset, item_id = str(item["evalset"]), str(item["id"])
    trace_id = trace_id_for(run_id, evalset, item_id)
    otel_trace_id = int(trace_id[3:], 16)
    span_id_hex = hashlib.sha256(trace_id.encode()).hexdigest()[:16]
    inputs = dict(item.get("inputs") or {})
    output = item.get("output")
    latency_s = _num(item.get("latency_s")) or 0.0
    end_ns = time.time_ns()
    start_ns = end_ns - int(latency_s * 1e9)
    prompt_tokens, output_tokens = _int(item.get("prompt_tokens")), _int(item.get("output_tokens"))

    attributes: dict[str, Any] = {
        "mlflow.traceRequestId": trace_id,
        "mlflow.spanType": "LLM",
        "mlflow.spanInputs": inputs,
        "mlflow.spanOutputs": output,
        "llmrelease.evalset": evalset,
        "llmrelease.item_id": item_id,
        "llmrelease.latency_s": latency_s,
    }
    if (ttft := _num(item.get("ttft_s"))) is not None:
        attributes["llmrelease.ttft_s"] = ttft
    usage = None
    if prompt_tokens is not None or output_tokens is not None:
        usage = {
            "input_tokens": prompt_tokens or 0,
            "output_tokens": output_tokens or 0,
            "total_tokens": (prompt_tokens or 0) + (output_tokens or 0),
        }
        attributes["mlflow.chat.tokenUsage"] = usage
    span = Span.from_dict(
        {
            "trace_id": base64.b64encode(otel_trace_id.to_bytes(16, "big")).decode(),
            "span_id": base64.b64encode(bytes.fromhex(span_id_hex)).decode(),
            "parent_span_id": None,
            "name": evalset,
            "start_time_unix_nano": start_ns,
            "end_time_unix_nano": end_ns,
            "events": [],
            "status": {"code": "STATUS_CODE_OK", "message": ""},
            # Span attributes are stored JSON-encoded, as MLflow's own spans keep them.
            "attributes": {k: json.dumps(v, default=str) for k, v in attributes.items()},
        }
    )

    source = AssessmentSource(source_type="CODE", source_id=SOURCE_ID)
    meta = {"mlflow.assessment.sourceRunId": run_id}

    def aid(kind: str, name: str) -> str:
        return "a-" + hashlib.sha256(f"{trace_id}\0{kind}\0{name}".encode()).hexdigest()[:32]

    assessments: list[Any] = []
    for name, value in (item.get("scores") or {}).items():
        v = _score(value)
        fb = (
            Feedback(name=name, value=v, source=source, metadata=meta, span_id=span_id_hex)
            if v is not None
            else Feedback(
                name=name,
                error=AssessmentError(error_code="NO_SCORE", error_message=f"score is {value!r}"),
                source=source,
                metadata=meta,
                span_id=span_id_hex,
            )
        )
        assessments.append(fb)
    for name, value in (item.get("labels") or {}).items():
        if value is not None:
            assessments.append(
                Feedback(name=name, value=str(value), source=source, metadata=meta, span_id=span_id_hex)
            )
    if (reference := item.get("reference")) is not None:
        assessments.append(
            Expectation(
                name=EXPECTATION,
                value=reference,
                source=AssessmentSource(source_type="HUMAN", source_id=SOURCE_ID),
                metadata=meta,
                span_id=span_id_hex,
            )
        )
    for a in assessments:
        a.trace_id = trace_id
        a.assessment_id = aid("expectation" if a.expectation is not None else "feedback", a.name)

    metadata = {"mlflow.trace_schema.version": "3", "mlflow.sourceRun": run_id}
    if model_id:
        metadata["mlflow.modelId"] = model_id
    if usage is not None:
        metadata["mlflow.trace.tokenUsage"] = json.dumps(usage)
    tags = {
        **fixed_tags,
        "mlflow.traceName": evalset,
        TAG_EVALSET: evalset,
        TAG_ITEM_ID: item_id,
    }
    if item_tags := item.get("tags"):
        tags[TAG_ITEM_TAGS] = ",".join(str(t) for t in item_tags)
    item_key = "llmrelease.item" if "item" in inputs else "item"
    info = TraceInfo(
        trace_id=trace_id,
        trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=start_ns // 1_000_000,
        state=TraceState.OK,
        execution_duration=(end_ns - start_ns) // 1_000_000,
        client_request_id=f"{evalset}/{item_id}",
        # MLflow's run comparison pairs the two runs' traces by this preview: the item key first
        # keeps the pairs right when two items share their inputs or a long common prefix.
        request_preview=_preview(json.dumps({item_key: f"{evalset}/{item_id}", **inputs}, default=str)),
        response_preview=None
        if output is None
        else _preview(output if isinstance(output, str) else json.dumps(output)),
        trace_metadata=metadata,
        tags=tags,
        assessments=assessments,
    )
    return info, span


def _preview(text: str) -> str:
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 3] + "..."


def _num(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _score(value: Any) -> float | bool | None:
    """A score as a JSON-safe Feedback value: bools stay bools, numbers become floats; None and
    NaN (no score) become None."""
    if value is None:
        return None
    if isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", None) == "b":
        return bool(value)
    return _num(value)


def _describe(trace: Any) -> dict[str, Any]:
    info = trace.info
    root = next((s for s in trace.data.spans if s.parent_id is None), None)
    output = root.outputs if root is not None else None
    if output is not None and not isinstance(output, str):
        output = json.dumps(output)  # a JSON text output comes back parsed (see the module's notes)
    feedback: dict[str, Any] = {}
    expectations: dict[str, Any] = {}
    for a in info.assessments:
        if a.expectation is not None:
            expectations[a.name] = a.expectation.value
        elif a.feedback is not None:
            feedback[a.name] = a.feedback.value
    prompts = json.loads(info.tags.get("mlflow.linkedPrompts") or "[]")
    return {
        "trace_id": info.trace_id,
        "evalset": info.tags.get(TAG_EVALSET),
        "id": info.tags.get(TAG_ITEM_ID),
        "client_request_id": info.client_request_id,
        "inputs": root.inputs if root is not None else None,
        "output": output,
        "item_tags": [t for t in (info.tags.get(TAG_ITEM_TAGS) or "").split(",") if t],
        "model_id": info.trace_metadata.get("mlflow.modelId"),
        "run_id": info.trace_metadata.get("mlflow.sourceRun"),
        "prompts": [f"{p['name']}/{p['version']}" for p in prompts],
        "execution_ms": info.execution_duration,
        "assessments": feedback,
        "expectations": expectations,
    }
