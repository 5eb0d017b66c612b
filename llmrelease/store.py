"""Where results go: the MLflow tracking URI and artifact root, with an embedded default.

Without MLFLOW_TRACKING_URI, a project gets its own SQLite store under ``<project>/.llmrelease/``
so nothing is written to a surprising place and the UI command can be printed exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Store", "resolve_store"]


@dataclass(frozen=True)
class Store:
    tracking_uri: str
    artifact_root: str | None

    @property
    def ui_command(self) -> str:
        if self.tracking_uri.startswith("sqlite:"):
            cmd = f"mlflow ui --backend-store-uri {self.tracking_uri}"
            if self.artifact_root:
                cmd += f" --default-artifact-root {self.artifact_root}"
            return cmd + " --port 5000   # then open http://127.0.0.1:5000"
        if self.tracking_uri.startswith(("http://", "https://")):
            return f"open {self.tracking_uri}"
        return f"mlflow ui --backend-store-uri {self.tracking_uri}"


def resolve_store(project: Path, tracking_uri: str | None = None, *, store_dir: Path | None = None) -> Store:
    """Explicit URI > MLFLOW_TRACKING_URI > ``<project>/.llmrelease/mlflow.db`` (or ``store_dir``)."""
    uri = tracking_uri or (None if store_dir else os.environ.get("MLFLOW_TRACKING_URI"))
    if uri:
        return Store(uri, os.environ.get("LLMRELEASE_ARTIFACT_ROOT"))
    base = (store_dir or project / ".llmrelease").resolve()
    base.mkdir(parents=True, exist_ok=True)
    return Store(f"sqlite:///{base / 'mlflow.db'}", (base / "artifacts").as_uri())
