"""Where results go, and that credentials in a tracking URI are never shown."""

from __future__ import annotations

from pathlib import Path

from llmrelease.store import redact_uri, resolve_store


def test_embedded_default_store_lives_in_the_project(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LLMRELEASE_ARTIFACT_ROOT", raising=False)
    store = resolve_store(tmp_path)
    assert store.tracking_uri == f"sqlite:///{tmp_path.resolve() / '.llmrelease' / 'mlflow.db'}"
    assert store.artifact_root == (tmp_path.resolve() / ".llmrelease" / "artifacts").as_uri()
    assert store.ui_command.startswith(f"mlflow ui --backend-store-uri {store.tracking_uri}")
    monkeypatch.setenv("LLMRELEASE_ARTIFACT_ROOT", "s3://bucket/prefix")
    assert resolve_store(tmp_path).artifact_root == "s3://bucket/prefix"


def test_environment_and_option_take_precedence(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert resolve_store(tmp_path).tracking_uri == "http://mlflow.internal:5000"
    assert resolve_store(tmp_path, "sqlite:///x.db").tracking_uri == "sqlite:///x.db"
    assert not (tmp_path / ".llmrelease").exists()


def test_credentials_are_masked() -> None:
    assert (
        redact_uri("https://alice:s3cret@mlflow.example.com:8443/path")
        == "https://***@mlflow.example.com:8443/path"
    )
    assert redact_uri("https://token@mlflow.example.com") == "https://***@mlflow.example.com"
    assert redact_uri("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    store = resolve_store(Path("."), "https://alice:s3cret@mlflow.example.com")
    assert "s3cret" not in store.ui_command


def test_exported_store_is_scoped(tmp_path: Path, monkeypatch) -> None:
    import os

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("LLMRELEASE_ARTIFACT_ROOT", "s3://keep")
    store = resolve_store(tmp_path)
    with store.exported():
        assert os.environ["MLFLOW_TRACKING_URI"] == store.tracking_uri
        assert os.environ["LLMRELEASE_ARTIFACT_ROOT"] == store.artifact_root
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert os.environ["LLMRELEASE_ARTIFACT_ROOT"] == "s3://keep"
