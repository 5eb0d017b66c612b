"""The webhook relay, in process: every forged, malformed or repeated request is refused before
anything reaches Prefect. (The end-to-end path through a real Prefect server is in
test_triggers_e2e.py.)"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from llmrelease.tasks.triggers.relay.app import RelayConfig, create_app
from llmrelease.tasks.triggers.relay.events import github_push_event, mlflow_event
from llmrelease.tasks.triggers.relay.signatures import mlflow_signature, verify_github, verify_mlflow
from tests.github_payloads import push_payload, signed

SECRET = "s3cr3t-for-tests"
A, B = "a" * 40, "b" * 40


class Prefect:
    """Records the events the relay posts; ``fail`` makes the API answer 500."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.fail = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/health"):
            return httpx.Response(200, json=True)
        if self.fail:
            return httpx.Response(500)
        self.events.extend(json.loads(request.content))
        return httpx.Response(204)


@pytest.fixture
def relay(tmp_path: Path):
    prefect = Prefect()
    config = RelayConfig(
        prefect_api_url="http://prefect.invalid/api",
        github_secret=SECRET,
        mlflow_secret=SECRET,
        max_body=64 * 1024,
        deliveries=tmp_path / "deliveries.sqlite",
    )
    with TestClient(create_app(config, transport=httpx.MockTransport(prefect))) as client:
        yield client, prefect


def push(**kw) -> dict:
    return push_payload(before=A, after=B, modified=["registry/support-triage/prompt.yaml"], **kw)


def test_signed_push_becomes_one_prefect_event(relay) -> None:
    client, prefect = relay
    body, headers = signed(push(), SECRET)
    r = client.post("/hooks/github", content=body, headers=headers)
    assert r.status_code == 202, r.text
    [event] = prefect.events
    assert event["event"] == "github.push"
    assert event["resource"]["prefect.resource.id"] == "github.repository.acme/llm-apps"
    assert event["resource"]["github.default_branch"] == "true"
    assert event["payload"]["changed_paths"] == ["registry/support-triage/prompt.yaml"]
    assert (event["payload"]["before"], event["payload"]["after"]) == (A, B)
    assert event["payload"]["paths_complete"] is True


def test_form_encoded_push_is_accepted(relay) -> None:
    from urllib.parse import urlencode

    client, prefect = relay
    body = urlencode({"payload": json.dumps(push())}).encode()
    _, headers = signed(body, SECRET)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    assert client.post("/hooks/github", content=body, headers=headers).status_code == 202
    assert len(prefect.events) == 1


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda h, b: h.pop("X-Hub-Signature-256"), id="missing"),
        pytest.param(lambda h, b: h.update({"X-Hub-Signature-256": "sha256=" + "0" * 64}), id="wrong"),
        pytest.param(lambda h, b: h.update({"X-Hub-Signature-256": "sha1=abc"}), id="sha1"),
        pytest.param(
            lambda h, b: h.update(
                {"X-Hub-Signature-256": signed(b, "other-secret")[1]["X-Hub-Signature-256"]}
            ),
            id="other-secret",
        ),
    ],
)
def test_badly_signed_push_gets_401_and_starts_nothing(relay, forge) -> None:
    client, prefect = relay
    body, headers = signed(push(), SECRET)
    forge(headers, body)
    r = client.post("/hooks/github", content=body, headers=headers)
    assert r.status_code == 401
    assert SECRET not in r.text
    assert prefect.events == []


def test_body_changed_after_signing_gets_401(relay) -> None:
    client, prefect = relay
    body, headers = signed(push(), SECRET)
    tampered = body.replace(b"registry/support-triage", b"registry/other-app")
    assert client.post("/hooks/github", content=tampered, headers=headers).status_code == 401
    assert prefect.events == []


def test_repeated_delivery_starts_nothing_new(relay) -> None:
    client, prefect = relay
    body, headers = signed(push(), SECRET)
    assert client.post("/hooks/github", content=body, headers=headers).status_code == 202
    again = client.post("/hooks/github", content=body, headers=headers)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert len(prefect.events) == 1


def test_failed_forward_is_not_remembered(relay) -> None:
    client, prefect = relay
    body, headers = signed(push(), SECRET)
    prefect.fail = True
    assert client.post("/hooks/github", content=body, headers=headers).status_code == 502
    prefect.fail = False  # GitHub's redelivery (same delivery id) goes through
    assert client.post("/hooks/github", content=body, headers=headers).status_code == 202
    assert len(prefect.events) == 1


def test_oversized_body_gets_413(relay) -> None:
    client, prefect = relay
    big = push()
    big["commits"][0]["message"] = "x" * 100_000
    body, headers = signed(big, SECRET)
    assert client.post("/hooks/github", content=body, headers=headers).status_code == 413

    def chunks():  # no Content-Length: counted as it arrives
        yield body[:50_000]
        yield body[50_000:]

    headers.pop("Content-Length", None)
    assert client.post("/hooks/github", content=chunks(), headers=headers).status_code == 413
    assert prefect.events == []


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"\xff\xfe", json.dumps({"ref": "refs/heads/main"}).encode(), b"[1, 2]"],
    ids=["broken", "empty", "not-utf8", "no-repository", "array"],
)
def test_malformed_push_gets_400(relay, body: bytes) -> None:
    client, prefect = relay
    body, headers = signed(body, SECRET)
    assert client.post("/hooks/github", content=body, headers=headers).status_code == 400
    assert prefect.events == []


def test_ping_other_events_tags_and_deletions_start_nothing(relay) -> None:
    client, prefect = relay
    body, headers = signed({"zen": "Keep it logically awesome.", "hook_id": 1}, SECRET, event="ping")
    assert client.post("/hooks/github", content=body, headers=headers).json()["message"] == "pong"
    body, headers = signed({"action": "opened"}, SECRET, event="issues")
    assert client.post("/hooks/github", content=body, headers=headers).status_code == 202
    body, headers = signed(push(ref="refs/tags/v1"), SECRET)
    assert client.post("/hooks/github", content=body, headers=headers).status_code == 202
    deleted = {**push(), "deleted": True, "after": "0" * 40}
    body, headers = signed(deleted, SECRET)
    assert client.post("/hooks/github", content=body, headers=headers).status_code == 202
    assert prefect.events == []


def test_unconfigured_hook_refuses_everything(tmp_path: Path) -> None:
    prefect = Prefect()
    config = RelayConfig(prefect_api_url="http://p/api", deliveries=tmp_path / "d.sqlite")
    with TestClient(create_app(config, transport=httpx.MockTransport(prefect))) as client:
        body, headers = signed(push(), SECRET)
        assert client.post("/hooks/github", content=body, headers=headers).status_code == 503
        assert client.post("/hooks/mlflow", content=b"{}").status_code == 503
        assert client.get("/healthz").json()["hooks"] == {"github": False, "mlflow": False}
    assert prefect.events == []


def mlflow_delivery(payload: dict, secret: str = SECRET, *, sent: float | None = None):
    body = json.dumps(payload).encode()
    delivery, ts = str(uuid.uuid4()), str(int(sent if sent is not None else time.time()))
    return body, {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": mlflow_signature(secret, delivery, ts, body),
    }


ALIAS_SET = {
    "entity": "model_version_alias",
    "action": "created",
    "timestamp": "2026-11-26T17:00:00+00:00",
    "data": {"name": "support-triage", "alias": "champion", "version": "3"},
}


def test_signed_mlflow_alias_event_is_forwarded_once(relay) -> None:
    client, prefect = relay
    body, headers = mlflow_delivery(ALIAS_SET)
    assert client.post("/hooks/mlflow", content=body, headers=headers).status_code == 202
    assert client.post("/hooks/mlflow", content=body, headers=headers).json()["duplicate"] is True
    [event] = prefect.events
    assert event["event"] == "mlflow.model_version_alias.created"
    assert event["resource"]["prefect.resource.id"] == "mlflow.registered_model.support-triage"
    assert event["payload"]["version"] == "3" and event["payload"]["alias"] == "champion"


@pytest.mark.parametrize(
    ("forge", "status"),
    [
        (lambda h: h.pop("X-MLflow-Signature"), 401),
        (lambda h: h.update({"X-MLflow-Signature": "v1,AAAA"}), 401),
        (lambda h: h.update({"X-MLflow-Delivery-Id": "another-id"}), 401),  # id is signed too
        (lambda h: h.update({"X-MLflow-Timestamp": "12"}), 401),  # timestamp is signed too
        (lambda h: h.pop("X-MLflow-Timestamp"), 401),
    ],
    ids=["missing", "wrong", "id-swapped", "time-swapped", "no-timestamp"],
)
def test_forged_mlflow_delivery_gets_401(relay, forge, status) -> None:
    client, prefect = relay
    body, headers = mlflow_delivery(ALIAS_SET)
    forge(headers)
    assert client.post("/hooks/mlflow", content=body, headers=headers).status_code == status
    assert prefect.events == []


def test_stale_mlflow_delivery_is_refused_even_when_correctly_signed(relay) -> None:
    client, prefect = relay
    body, headers = mlflow_delivery(ALIAS_SET, sent=time.time() - 3600)
    r = client.post("/hooks/mlflow", content=body, headers=headers)
    assert r.status_code == 401 and "away from now" in r.json()["message"]
    assert prefect.events == []


def test_mlflow_non_alias_events_are_ignored_and_bad_shapes_get_400(relay) -> None:
    client, prefect = relay
    other = {"entity": "model_version", "action": "created", "data": {"name": "x", "version": "1"}}
    body, headers = mlflow_delivery(other)
    assert client.post("/hooks/mlflow", content=body, headers=headers).status_code == 202
    bad = {**ALIAS_SET, "data": {"name": "support-triage"}}
    body, headers = mlflow_delivery(bad)
    r = client.post("/hooks/mlflow", content=body, headers=headers)
    assert r.status_code == 400 and "alias" in r.json()["message"]
    assert prefect.events == []


def test_health_reports_prefect_reachability(relay) -> None:
    client, _ = relay
    assert client.get("/healthz").json() == {
        "status": "ok",
        "prefect": "reachable",
        "hooks": {"github": True, "mlflow": True},
    }


def test_logs_never_carry_the_secret_or_signature(relay, caplog) -> None:
    import logging

    client, _ = relay
    logger = logging.getLogger("llmrelease.tasks.triggers.relay")
    logger.propagate = True
    try:
        with caplog.at_level(logging.INFO, logger="llmrelease.tasks.triggers.relay"):
            body, headers = signed(push(), SECRET)
            client.post("/hooks/github", content=body, headers=headers)
            headers["X-Hub-Signature-256"] = "sha256=" + "1" * 64
            client.post("/hooks/github", content=body, headers=headers)
    finally:
        logger.propagate = False
    text = " ".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "forwarded" in text and "does not match" in text
    assert SECRET not in text and "sha256=" not in text


def test_signature_functions_match_the_senders_published_schemes() -> None:
    # GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert verify_github("It's a Secret to Everybody", b"Hello, World!", expected) is None
    # MLflow signs with its own code: compare with it.
    from mlflow.webhooks.delivery import _generate_hmac_signature

    sig = _generate_hmac_signature("k", "d-1", "1700000000", '{"a": 1}')
    assert sig == mlflow_signature("k", "d-1", "1700000000", b'{"a": 1}')
    assert (
        verify_mlflow(
            "k", b'{"a": 1}', signature=sig, delivery_id="d-1", timestamp="1700000000", now=1700000010
        )
        is None
    )


def test_push_event_paths_are_complete_only_when_github_listed_every_commit() -> None:
    forced = {**push(), "commits": [], "forced": True}
    assert github_push_event(forced, "d")["payload"]["paths_complete"] is False
    many = push()
    many["commits"] = many["commits"] * 2048
    assert github_push_event(many, "d")["payload"]["paths_complete"] is False
    feature = push(ref="refs/heads/feature/x")
    assert github_push_event(feature, "d")["resource"]["github.default_branch"] == "false"
    assert github_push_event(push(), "d")["id"] == github_push_event(push(), "d")["id"]
    assert mlflow_event({"entity": "prompt", "action": "created", "data": {}}, "d") is None


def test_push_without_event_or_delivery_header_gets_400(relay) -> None:
    client, prefect = relay
    for header in ("X-GitHub-Event", "X-GitHub-Delivery"):
        body, headers = signed(push(), SECRET)
        headers.pop(header)
        assert client.post("/hooks/github", content=body, headers=headers).status_code == 400
    assert prefect.events == []
