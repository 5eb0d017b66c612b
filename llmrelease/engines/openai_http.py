"""The ``openai`` backend: evaluate on any OpenAI-compatible chat endpoint.

The endpoint does the scaling (vLLM's data and tensor parallelism, llm-d, the vLLM production
stack, a hosted API); this client keeps ``concurrency`` streamed requests in flight across chunk
boundaries, retries what a busy or restarting server refuses (408/409/425/429/5xx, a dropped
connection) with exponential backoff and jitter (``Retry-After`` honoured), and measures each item
from its stream: tokens from ``usage`` (cached prompt tokens from ``prompt_tokens_details``), time
to first token, latency. Structured outputs go as ``response_format: json_schema``, which vLLM's
server enforces with the same grammar backend as the offline engine. Log-probabilities are not
requested (not every OpenAI-compatible endpoint serves them), so its generations carry no
``mean_logprob``/``min_logprob``: a cascade router gets None from this backend, not a made-up confidence.

A request that still fails after its retries fails the release (exit 4) instead of scoring an
empty answer: a verdict must not rest on outages. Finished chunks are checkpointed by the
evaluation step, so running the release again resumes.

Without a base URL (the spec's or ``OPENAI_BASE_URL``), the backend starts vLLM's OpenAI server
for the spec's own weights on 127.0.0.1, once per process: the HTTP path with nothing to deploy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import random
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from llmrelease.engines.base import (
    Generation,
    GenerationBatch,
    Measurement,
    Messages,
    Progress,
    StreamingEngine,
)
from llmrelease.errors import InfrastructureError, SpecError
from llmrelease.specs import EngineSpec, ModelSpec, SamplingSpec

__all__ = ["Endpoint", "OpenAIEngine", "load_engine", "RETRY_STATUS", "backoff_s"]

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
"""Refusals worth another try: time-outs, rate limits, overload and a restarting server."""

MANAGED_NAME = "llmrelease"
"""The served model name of a server this backend starts."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str = ""
    """The served model name ('' until resolved from ``GET /models``)."""
    api_key: str | None = field(default=None, repr=False)
    managed: bool = False
    """Started by llmrelease for this spec (not a deployment someone else runs)."""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def backoff_s(
    attempt: int, retry_after_s: float | None, *, base_s: float = 0.5, cap_s: float = 30.0
) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): the server's ``Retry-After`` when given,
    else full-jitter exponential backoff (every client waiting the same time would come back at once)."""
    if retry_after_s is not None:
        return min(retry_after_s, cap_s * 4)
    return random.uniform(0, min(cap_s, base_s * 2**attempt))


class RequestFailed(InfrastructureError):
    """One item's request failed after every retry (or was refused in a way a retry cannot fix)."""


class OpenAIEngine(StreamingEngine):
    """Chat completions, streamed, at most ``concurrency`` in flight; results in input order."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        concurrency: int = 32,
        max_retries: int = 5,
        request_timeout_s: float = 600.0,
        backoff_base_s: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.request_timeout_s = request_timeout_s
        self.backoff_base_s = backoff_base_s
        self._transport = transport
        self.retries = 0
        """Requests sent again over this engine's life (logged as ``engine.retries``)."""
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ Engine protocol
    def generate_stream(
        self,
        chunks: Iterable[list[Messages]],
        sampling: SamplingSpec,
        *,
        response_schema: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> Iterator[GenerationBatch]:
        """One batch per chunk, in order. The next chunk's requests are already queued behind the
        current one's, so the endpoint never drains at a chunk boundary; at most two chunks are held.
        Requests run on an event loop in a helper thread; progress is reported from this one."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="openai-engine", daemon=True)
        thread.start()
        finished = [0]
        reported = 0
        pending: deque[tuple[concurrent.futures.Future[list[Generation]], float]] = deque()
        source = iter(chunks)

        def report() -> None:
            nonlocal reported
            now = finished[0]
            if progress is not None and now > reported:
                progress(now - reported)
            reported = now

        with self._lock:
            client, limit = asyncio.run_coroutine_threadsafe(self._open(), loop).result()

            def submit() -> None:
                conversations = next(source, None)
                if conversations is None:
                    return
                coro = self._chunk(client, limit, conversations, sampling, response_schema, finished)
                pending.append((asyncio.run_coroutine_threadsafe(coro, loop), time.perf_counter()))

            try:
                submit()
                submit()
                while pending:
                    future, submitted = pending[0]
                    while True:
                        try:
                            generations = future.result(timeout=0.2)
                            break
                        except concurrent.futures.TimeoutError:
                            report()
                    report()
                    pending.popleft()
                    submit()
                    yield GenerationBatch(generations, time.perf_counter() - submitted)
            finally:
                for future, _ in pending:
                    future.cancel()
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=10)
                loop.call_soon_threadsafe(loop.stop)
                thread.join(10)
                loop.close()

    # ------------------------------------------------------------------ requests
    async def _open(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.request_timeout_s, connect=10.0),
            limits=httpx.Limits(
                max_connections=self.concurrency + 4, max_keepalive_connections=self.concurrency
            ),
            transport=self._transport,
        )
        return client, asyncio.Semaphore(self.concurrency)

    async def _chunk(
        self,
        client: httpx.AsyncClient,
        limit: asyncio.Semaphore,
        conversations: list[Messages],
        sampling: SamplingSpec,
        response_schema: dict[str, Any] | None,
        finished: list[int],
    ) -> list[Generation]:
        from llmrelease.engines.openai_server import request_body

        async def one(n: int, messages: Messages) -> Generation:
            body = request_body(self.endpoint.model, messages, sampling, response_schema)
            gen = await self._request(client, limit, str(n), body)
            finished[0] += 1
            return gen

        tasks = [asyncio.ensure_future(one(n, m)) for n, m in enumerate(conversations)]
        try:
            return list(await asyncio.gather(*tasks))
        finally:  # one item failed for good: stop sending the rest of the chunk
            for t in tasks:
                t.cancel()

    async def _request(
        self, client: httpx.AsyncClient, limit: asyncio.Semaphore, request_id: str, body: dict[str, Any]
    ) -> Generation:
        from llmrelease.engines.openai_server import stream_chat

        attempt = 0
        while True:
            async with limit:
                m = await stream_chat(
                    client, self.endpoint.base_url, request_id, body, headers=self.endpoint.headers()
                )
            if m.error is None:
                return _generation(m)
            retryable = m.status is None or m.status in RETRY_STATUS
            if m.error == "no usage in the stream":
                retryable = False  # the server does not report tokens: a retry will not either
            if not retryable or attempt >= self.max_retries:
                raise RequestFailed(_failure(self.endpoint, m, attempt))
            await asyncio.sleep(backoff_s(attempt, m.retry_after_s, base_s=self.backoff_base_s))
            attempt += 1
            self.retries += 1

    def served_models(self) -> list[str]:
        """The endpoint's model names (``GET /models``)."""
        url = self.endpoint.base_url.rstrip("/") + "/models"
        try:
            resp = httpx.get(url, headers=self.endpoint.headers(), timeout=30)
        except httpx.HTTPError as exc:
            raise InfrastructureError(f"openai backend: {_redact(url)} is unreachable: {exc!r}") from None
        if resp.status_code != 200:
            raise InfrastructureError(
                f"openai backend: GET {_redact(url)} answered HTTP {resp.status_code}: {resp.text[:200]}"
            )
        return [str(m.get("id")) for m in resp.json().get("data") or []]


def _generation(m: Measurement) -> Generation:
    return Generation(
        text=m.text,
        prompt_tokens=m.prompt_tokens,
        output_tokens=m.output_tokens,
        cached_tokens=m.cached_tokens,
        latency_s=m.latency_s,
        ttft_s=m.ttft_s,
        finish_reason=m.finish_reason,
    )


def _redact(url: str) -> str:
    from llmrelease.store import redact_uri

    return redact_uri(url)


def _failure(endpoint: Endpoint, m: Measurement, retries: int) -> str:
    why = m.error or "failed"
    if m.error == "no usage in the stream":
        why += " (the endpoint must support stream_options.include_usage: tokens and cost come from it)"
    tries = f" after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""
    return f"openai backend: a request to {_redact(endpoint.base_url)} failed{tries}: {why}"


def load_engine(
    model: ModelSpec, project_root: Path, spec_path: Path | None = None
) -> tuple[OpenAIEngine, dict[str, float]]:
    """The ``openai`` backend's factory: the spec's endpoint (or ``OPENAI_BASE_URL``), or a vLLM
    OpenAI server started here for the spec's weights; the served model checked against the endpoint."""
    spec: EngineSpec = model.engine
    base_url = spec.base_url or os.environ.get("OPENAI_BASE_URL") or None
    info: dict[str, float] = {}
    if base_url is None:
        endpoint, info = _managed_endpoint(model, project_root, spec_path)
    else:
        endpoint = Endpoint(base_url.rstrip("/"), spec.served_model or "", os.environ.get(spec.api_key_env))
    engine = OpenAIEngine(
        endpoint,
        concurrency=spec.concurrency,
        max_retries=spec.max_retries,
        request_timeout_s=spec.request_timeout_s,
    )
    served = engine.served_models()
    if not endpoint.model:
        if len(served) != 1:
            raise SpecError(
                f"the endpoint {_redact(endpoint.base_url)} serves {len(served)} models "
                f"({', '.join(served) or 'none'}); say which",
                file=spec_path,
                field="engine.served_model",
                fix="set engine.served_model to one of them",
            )
        engine.endpoint = Endpoint(endpoint.base_url, served[0], endpoint.api_key, endpoint.managed)
    elif endpoint.model not in served:
        raise SpecError(
            f"the endpoint {_redact(endpoint.base_url)} does not serve '{endpoint.model}'; it serves "
            + (", ".join(served) or "nothing"),
            file=spec_path,
            field="engine.served_model",
            fix="set engine.served_model to a served name",
        )
    info["engine.concurrency"] = float(spec.concurrency)
    return engine, info


def _managed_endpoint(
    model: ModelSpec, project_root: Path, spec_path: Path | None
) -> tuple[Endpoint, dict[str, float]]:
    """vLLM's OpenAI server for this spec, started once per process (shared with the shadow step
    when the weights and vLLM fields are the same)."""
    from llmrelease.engines.dtype import dtype_bits
    from llmrelease.engines.model_source import resolve_model_dir
    from llmrelease.engines.openai_server import get_server
    from llmrelease.engines.vllm_offline import vllm_dtype
    from llmrelease.specs import content_hash

    t0 = time.perf_counter()
    model_dir = resolve_model_dir(model.source, project_root=project_root, spec_path=spec_path)
    resolve_s = time.perf_counter() - t0
    key = content_hash({"model_dir": str(model_dir), "engine": model.engine.vllm_fields()})
    server, running = get_server(
        key, model_dir, model.engine, name=MANAGED_NAME, prefix_caching=True, timeout_s=600
    )
    return Endpoint(server.base_url, server.name, None, managed=True), {
        "engine.warm": float(running),
        "engine.startup_s": 0.0 if running else server.startup_s,
        "engine.model_resolve_s": resolve_s,
        "engine.dtype_bits": dtype_bits(vllm_dtype(model.engine.dtype)),
    }
