"""Where results go: the MLflow tracking URI and artifact root, with an embedded default.

Without MLFLOW_TRACKING_URI, a project gets its own SQLite store under ``<project>/.llmrelease/``
so nothing is written to a surprising place and the UI command can be printed exactly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from llmrelease.runtime import preserved_environ

__all__ = ["Store", "resolve_store", "redact_uri", "scrub_credentials"]

REACH_TIMEOUT_S = 10.0


def redact_uri(uri: str) -> str:
    """The URI with any user:password@ part masked, for display and logs."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))
    return uri


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def scrub_credentials(text: str) -> str:
    """Any ``scheme://user:password@`` in free text (an error message) masked, as :func:`redact_uri`."""
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)


@dataclass(frozen=True)
class Store:
    tracking_uri: str
    artifact_root: str | None

    @property
    def missing(self) -> bool:
        """A local SQLite store whose file does not exist yet (nothing was ever written to it)."""
        if not self.tracking_uri.startswith("sqlite:///"):
            return False
        return not Path(self.tracking_uri[len("sqlite:///") :]).exists()

    @contextmanager
    def exported(self) -> Iterator[None]:
        """Hand the store to the flow through the environment, so the URI (which may hold
        credentials) never becomes a Prefect flow-run parameter; restored afterwards."""
        with preserved_environ("MLFLOW_TRACKING_URI", "LLMRELEASE_ARTIFACT_ROOT"):
            os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
            if self.artifact_root:
                os.environ["LLMRELEASE_ARTIFACT_ROOT"] = self.artifact_root
            else:
                os.environ.pop("LLMRELEASE_ARTIFACT_ROOT", None)
            yield

    def check_reachable(self) -> None:
        """An MLflow server that does not answer stops the release here, in seconds, with one line
        (exit 4), before anything starts; MLflow's own client would retry for minutes."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return
        import httpx

        from llmrelease.errors import InfrastructureError

        url = self.tracking_uri.rstrip("/") + "/health"
        try:
            response = httpx.get(url, timeout=REACH_TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise InfrastructureError(
                f"the MLflow tracking server {redact_uri(self.tracking_uri)} did not answer: "
                f"{type(exc).__name__}: {scrub_credentials(str(exc).splitlines()[0]) if str(exc) else ''}"
            ) from None
        if response.status_code >= 500:
            raise InfrastructureError(
                f"the MLflow tracking server {redact_uri(self.tracking_uri)} answered {response.status_code} "
                "on /health"
            )

    @property
    def ui_command(self) -> str:
        if self.tracking_uri.startswith("sqlite:"):
            cmd = f"mlflow ui --backend-store-uri {self.tracking_uri}"
            if self.artifact_root:
                cmd += f" --default-artifact-root {self.artifact_root}"
            return cmd + " --port 5000   # then open http://127.0.0.1:5000"
        if self.tracking_uri.startswith(("http://", "https://")):
            return f"open {redact_uri(self.tracking_uri)}"
        return f"mlflow ui --backend-store-uri {self.tracking_uri}"


def resolve_store(
    project: Path, tracking_uri: str | None = None, *, store_dir: Path | None = None, create: bool = True
) -> Store:
    """Explicit URI > MLFLOW_TRACKING_URI > ``<project>/.llmrelease/mlflow.db`` (or ``store_dir``).

    Artifacts: LLMRELEASE_ARTIFACT_ROOT (e.g. ``s3://bucket/prefix``) > ``<store>/artifacts``.
    ``create=False``: readers (status, rollback) make no directory; see :attr:`Store.missing`."""
    uri = tracking_uri or (None if store_dir else os.environ.get("MLFLOW_TRACKING_URI"))
    if uri:
        return Store(uri, os.environ.get("LLMRELEASE_ARTIFACT_ROOT"))
    base = (store_dir or project / ".llmrelease").resolve()
    if create:
        base.mkdir(parents=True, exist_ok=True)
    artifacts = None if store_dir else os.environ.get("LLMRELEASE_ARTIFACT_ROOT")
    return Store(f"sqlite:///{base / 'mlflow.db'}", artifacts or (base / "artifacts").as_uri())
