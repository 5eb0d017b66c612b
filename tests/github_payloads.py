"""GitHub push webhook deliveries in GitHub's own format (fields as documented for the ``push``
event), signed the way GitHub signs them."""

from __future__ import annotations

import json
import uuid
from typing import Any

from llmrelease.tasks.triggers.relay.signatures import github_signature


def push_payload(
    *,
    before: str,
    after: str,
    modified: list[str],
    added: list[str] | None = None,
    removed: list[str] | None = None,
    ref: str = "refs/heads/main",
    repo: str = "acme/llm-apps",
) -> dict[str, Any]:
    owner, name = repo.split("/")
    commit = {
        "id": after,
        "tree_id": "5c4e5d2c0b4f0f5f6e1d0f7a1b2c3d4e5f6a7b8c",
        "distinct": True,
        "message": "Tighten the triage prompt",
        "timestamp": "2026-11-26T17:00:00+00:00",
        "url": f"https://github.com/{repo}/commit/{after}",
        "author": {"name": "Ada", "email": "ada@example.com", "username": "ada"},
        "committer": {"name": "Ada", "email": "ada@example.com", "username": "ada"},
        "added": added or [],
        "removed": removed or [],
        "modified": modified,
    }
    return {
        "ref": ref,
        "before": before,
        "after": after,
        "repository": {
            "id": 123456789,
            "node_id": "R_kgDOAbCdEf",
            "name": name,
            "full_name": repo,
            "private": True,
            "owner": {"name": owner, "login": owner, "id": 42, "type": "Organization"},
            "html_url": f"https://github.com/{repo}",
            "clone_url": f"https://github.com/{repo}.git",
            "ssh_url": f"git@github.com:{repo}.git",
            "default_branch": "main",
            "master_branch": "main",
            "pushed_at": 1795712400,
        },
        "pusher": {"name": "ada", "email": "ada@example.com"},
        "sender": {"login": "ada", "id": 7, "type": "User"},
        "created": False,
        "deleted": False,
        "forced": False,
        "base_ref": None,
        "compare": f"https://github.com/{repo}/compare/{before[:12]}...{after[:12]}",
        "commits": [commit],
        "head_commit": commit,
    }


def signed(payload: dict[str, Any] | bytes, secret: str, *, event: str = "push", delivery: str | None = None):
    """(body, headers) as GitHub sends them."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/abc1234",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "512345678",
        "X-Hub-Signature-256": github_signature(secret, body),
    }
    return body, headers
