"""Reading a run's artifacts back from a real MLflow SQLite store and file artifact root."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrelease.mlflow_registry import MlflowRegistry


def test_an_artifact_gone_from_the_store_is_one_line_naming_it(tmp_path: Path) -> None:
    """What the nightly reads back (router.json, a router's classifier) fails as one
    InfrastructureError naming the artifact and the run, whichever way it is read."""
    import json

    from llmrelease.errors import InfrastructureError

    registry = MlflowRegistry(
        f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=(tmp_path / "artifacts").as_uri()
    )
    kept = tmp_path / "router.json"
    kept.write_text(json.dumps({"a": 1}))
    run = registry.log_snapshot_run(
        "faq-bot", run_name="r", tags={}, params={}, metrics={}, datasets=[], files=[(kept, "router")]
    )
    assert registry.load_artifact_dict(run, "router/router.json") == {"a": 1}
    downloaded = registry.download_artifact(run, "router/router.json", tmp_path / "a")
    assert json.loads(downloaded.read_text()) == {"a": 1}
    for read in (
        lambda: registry.load_artifact_dict(run, "router/classifier.skops"),
        lambda: registry.download_artifact(run, "router/classifier.skops", tmp_path / "b"),
    ):
        with pytest.raises(InfrastructureError, match=f"artifact 'router/classifier.skops' of run {run}"):
            read()
