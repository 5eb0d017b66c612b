"""The relay as an ASGI app (Starlette): ``POST /hooks/github``, ``POST /hooks/mlflow``, ``GET /healthz``.

Checks run cheapest-first and nothing reaches Prefect unless all pass: body size (413), signature
(401), JSON (400), payload shape (400), repeated delivery (200, nothing forwarded). Secrets come
from the environment and never appear in responses or logs; an endpoint without a configured secret
refuses everything (503) instead of accepting unsigned calls.

Run it with ``llmrelease relay`` (uvicorn), or inside ``llmrelease serve``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from llmrelease.tasks.triggers.relay.deliveries import Deliveries
from llmrelease.tasks.triggers.relay.events import PayloadError, github_push_event, mlflow_event
from llmrelease.tasks.triggers.relay.signatures import verify_github, verify_mlflow

__all__ = ["RelayConfig", "create_app", "log"]

GITHUB_SECRET_ENV = "LLMRELEASE_GITHUB_WEBHOOK_SECRET"
MLFLOW_SECRET_ENV = "LLMRELEASE_MLFLOW_WEBHOOK_SECRET"
DEFAULT_MAX_BODY = 5 * 1024 * 1024

log = logging.getLogger("llmrelease.tasks.triggers.relay")


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(record.created, 3), "level": record.levelname.lower(), "msg": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        return json.dumps(line, sort_keys=False)


def _configure_logging() -> None:
    if not any(getattr(h, "_llmrelease", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_JsonLines())
        handler._llmrelease = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


@dataclass
class RelayConfig:
    prefect_api_url: str
    github_secret: str | None = None
    mlflow_secret: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    deliveries: Path | str = ":memory:"
    prefect_headers: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> RelayConfig:
        env = dict(os.environ if env is None else env)
        api = env.get("PREFECT_API_URL")
        if not api:
            raise RuntimeError("PREFECT_API_URL is not set: the relay posts events to the Prefect API")
        headers = {}
        if env.get("PREFECT_API_KEY"):
            headers["Authorization"] = f"Bearer {env['PREFECT_API_KEY']}"
        elif env.get("PREFECT_API_AUTH_STRING"):
            token = base64.b64encode(env["PREFECT_API_AUTH_STRING"].encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        home = Path(env.get("LLMRELEASE_RELAY_HOME", Path.home() / ".llmrelease" / "relay"))
        return cls(
            prefect_api_url=api.rstrip("/"),
            github_secret=env.get(GITHUB_SECRET_ENV) or None,
            mlflow_secret=env.get(MLFLOW_SECRET_ENV) or None,
            max_body=int(env.get("LLMRELEASE_RELAY_MAX_BODY", DEFAULT_MAX_BODY)),
            deliveries=home / "deliveries.sqlite",
            prefect_headers=headers,
        )


_Handler = Callable[[Request, bytes, str, str], Awaitable[JSONResponse]]
"""A sender's own checks and forwarding: (request, raw body, delivery id, secret) -> response."""


class _Reject(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _Reject(413, f"body of {declared} bytes is over the {limit}-byte limit")
        except ValueError:
            raise _Reject(400, "Content-Length is not a number") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # chunked uploads declare no length: count as they arrive
            raise _Reject(413, f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _json(body: bytes, content_type: str) -> Any:
    """GitHub sends ``application/json`` or a form with a ``payload`` field; both are signed raw."""
    try:
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = parse_qs(body.decode("utf-8"), strict_parsing=True)
            return json.loads(form["payload"][0])
        return json.loads(body)
    except (ValueError, KeyError, UnicodeDecodeError) as exc:
        raise _Reject(400, f"body is not valid JSON: {type(exc).__name__}") from None


def create_app(config: RelayConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    """``transport``: how events reach Prefect (default: HTTP); unit tests pass a recorder."""
    _configure_logging()
    deliveries = Deliveries(config.deliveries)
    client = httpx.AsyncClient(timeout=15, headers=config.prefect_headers, transport=transport)

    async def forward(source: str, delivery: str, event: dict[str, Any]) -> JSONResponse:
        if not deliveries.claim(source, delivery):
            return _answer(200, source, delivery, "duplicate delivery: already forwarded", duplicate=True)
        try:
            response = await client.post(f"{config.prefect_api_url}/events", json=[event])
            response.raise_for_status()
        except httpx.HTTPError as exc:
            deliveries.release(source, delivery)  # let the sender's retry through
            return _answer(502, source, delivery, f"Prefect API did not take the event: {type(exc).__name__}")
        return _answer(202, source, delivery, "forwarded", event=event["event"], event_id=event["id"])

    def hook(
        source: str, delivery_header: str, secret: str | None, secret_env: str, handle: _Handler
    ) -> Callable[[Request], Awaitable[JSONResponse]]:
        """An endpoint: the checks every sender shares (secret configured, body size), then the
        sender's own ``handle``; a rejection it raises becomes its status code."""

        async def endpoint(request: Request) -> JSONResponse:
            delivery = request.headers.get(delivery_header, "")
            try:
                if secret is None:
                    raise _Reject(503, f"{source} hook not configured: set {secret_env}")
                body = await _body(request, config.max_body)
                return await handle(request, body, delivery, secret)
            except PayloadError as exc:
                return _answer(400, source.lower(), delivery, str(exc))
            except _Reject as exc:
                return _answer(exc.status, source.lower(), delivery, exc.reason)

        return endpoint

    async def github(request: Request, body: bytes, delivery: str, secret: str) -> JSONResponse:
        reason = verify_github(secret, body, request.headers.get("x-hub-signature-256"))
        if reason:
            raise _Reject(401, reason)
        payload = _json(body, request.headers.get("content-type", "application/json"))
        kind = request.headers.get("x-github-event")
        if not kind or not delivery:
            raise _Reject(400, "missing X-GitHub-Event or X-GitHub-Delivery")
        if kind == "ping":
            return _answer(200, "github", delivery, "pong")
        if kind != "push":
            return _answer(202, "github", delivery, f"ignored: '{kind}' events start nothing")
        event = github_push_event(payload, delivery)
        if event is None:
            return _answer(202, "github", delivery, "ignored: branch deletion or tag push")
        return await forward("github", delivery, event)

    async def mlflow(request: Request, body: bytes, delivery: str, secret: str) -> JSONResponse:
        reason = verify_mlflow(
            secret,
            body,
            signature=request.headers.get("x-mlflow-signature"),
            delivery_id=delivery or None,
            timestamp=request.headers.get("x-mlflow-timestamp"),
            now=time.time(),
        )
        if reason:
            raise _Reject(401, reason)
        event = mlflow_event(_json(body, "application/json"), delivery)
        if event is None:
            return _answer(202, "mlflow", delivery, "ignored: not an alias event")
        return await forward("mlflow", delivery, event)

    async def healthz(request: Request) -> JSONResponse:
        try:
            ok = (await client.get(f"{config.prefect_api_url}/health", timeout=3)).status_code == 200
        except httpx.HTTPError:
            ok = False
        body = {
            "status": "ok" if ok else "degraded",
            "prefect": "reachable" if ok else "unreachable",
            "hooks": {"github": config.github_secret is not None, "mlflow": config.mlflow_secret is not None},
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()
        deliveries.close()

    return Starlette(
        routes=[
            Route(
                "/hooks/github",
                hook("GitHub", "x-github-delivery", config.github_secret, GITHUB_SECRET_ENV, github),
                methods=["POST"],
            ),
            Route(
                "/hooks/mlflow",
                hook("MLflow", "x-mlflow-delivery-id", config.mlflow_secret, MLFLOW_SECRET_ENV, mlflow),
                methods=["POST"],
            ),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def _answer(status: int, source: str, delivery: str, message: str, **extra: Any) -> JSONResponse:
    fields = {"source": source, "delivery": delivery[:80], "status": status, **extra}
    log.log(logging.WARNING if status >= 400 else logging.INFO, message, extra={"fields": fields})
    return JSONResponse({"status": status, "message": message, **extra}, status_code=status)
