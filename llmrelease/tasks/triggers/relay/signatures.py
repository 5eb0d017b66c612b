"""Webhook signature checks, pure: raw body and headers in, a yes or a reason out.

Both senders sign with HMAC-SHA256; comparisons are constant-time (``hmac.compare_digest``) so the
response time does not leak how much of a forged signature was right.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["github_signature", "verify_github", "mlflow_signature", "verify_mlflow", "MLFLOW_TOLERANCE_S"]

MLFLOW_TOLERANCE_S = 300
"""How far an MLflow delivery's signed timestamp may be from now: a captured delivery replayed
later is refused even if its id was never seen (the relay's memory of ids is finite)."""


def github_signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends: ``sha256=`` + hex HMAC of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_github(secret: str, body: bytes, header: str | None) -> str | None:
    """None when the signature is right, else why not (for the log; never the expected value)."""
    if not header:
        return "missing X-Hub-Signature-256"
    if not header.startswith("sha256="):
        return "X-Hub-Signature-256 is not sha256=<hex>"
    if not hmac.compare_digest(github_signature(secret, body).encode(), header.strip().encode()):
        return "X-Hub-Signature-256 does not match the body"
    return None


def mlflow_signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """MLflow's ``X-MLflow-Signature``: ``v1,`` + base64 HMAC of ``<delivery id>.<timestamp>.<body>``
    (the Standard Webhooks scheme, see mlflow/webhooks/delivery.py)."""
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()


def verify_mlflow(
    secret: str,
    body: bytes,
    *,
    signature: str | None,
    delivery_id: str | None,
    timestamp: str | None,
    now: float,
    tolerance_s: float = MLFLOW_TOLERANCE_S,
) -> str | None:
    """None when the delivery is signed by ``secret`` and recent, else why not."""
    if not signature:
        return "missing X-MLflow-Signature"
    if not delivery_id or not timestamp:
        return "missing X-MLflow-Delivery-Id or X-MLflow-Timestamp"
    try:
        sent = int(timestamp)
    except ValueError:
        return "X-MLflow-Timestamp is not a Unix time"
    expected = mlflow_signature(secret, delivery_id, timestamp, body).encode()
    # A sender may list several signatures separated by spaces (key rotation).
    if not any(hmac.compare_digest(expected, s.encode()) for s in signature.split()):
        return "X-MLflow-Signature does not match the body"
    if abs(now - sent) > tolerance_s:
        return f"X-MLflow-Timestamp is {abs(now - sent):.0f} s away from now (limit {tolerance_s:.0f} s)"
    return None
