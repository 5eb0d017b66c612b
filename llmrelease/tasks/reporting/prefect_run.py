"""What the Prefect UI shows of a release: a run named after app and candidate, the gate table as
a markdown artifact on the run, and a final state that says the verdict.

States: a release that reached a verdict is a COMPLETED run (the pipeline did its job) whose state
*name* is the verdict (``Promoted``, ``Rejected``, ``Inconclusive``, ...), so a person filters the
runs list on it and automations match it; a run that raised is ``Failed`` and a process that died
is ``Crashed``, as Prefect names them. A rejection is never confused with an outage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from llmrelease.tasks.reporting.version_page import gate_markdown_table

__all__ = ["STATE_NAMES", "initial_run_name", "rename_run", "publish_gate_table", "final_state"]

STATE_NAMES = {
    "promoted": "Promoted",
    "rejected": "Rejected",
    "inconclusive": "Inconclusive",
    "already_champion": "AlreadyChampion",
    "conflict": "Conflict",
    "test_engine": "TestEngine",
}


def initial_run_name() -> str:
    """``flow_run_name`` of the release flow: app and what is released (commit or spec files);
    renamed to app and model version once the candidate is registered."""
    from prefect.runtime import flow_run

    p = flow_run.parameters
    what = (p.get("git_commit") or "")[:12] or " + ".join(
        f.rsplit("/", 1)[-1] for f in (p.get("prompt_file"), p.get("model_file")) if f
    )
    return f"{p['app']} @ {what or 'worktree'}"


def rename_run(name: str) -> None:
    """Rename the running flow run (no-op outside one)."""
    from prefect import get_client
    from prefect.runtime import flow_run

    if flow_run.id is None:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, name=name[:200])


def _key(app: str) -> str:
    """Artifact keys: lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{app}-gates".lower()).strip("-")


def publish_gate_table(
    app: str, version: str, status: str, report: Mapping[str, Any], *, run_id: str, tracking_uri: str
) -> None:
    """The gate table as a markdown artifact on the flow run (keyed per app, so the Artifacts page
    shows each app's latest verdict with its history)."""
    from prefect.artifacts import create_markdown_artifact

    decision = str(report.get("decision", "")).upper()
    body = "\n".join(
        [
            f"## {app} v{version}: {STATE_NAMES.get(status, status)} (gates {decision})",
            "",
            gate_markdown_table(report, evidence=True),
            "",
            f"MLflow run `{run_id}` in `{tracking_uri}`; the model version's page in the MLflow UI "
            "says the same, with links to the release report.",
        ]
    )
    create_markdown_artifact(markdown=body, key=_key(app), description=f"{app} v{version}: gates {decision}")


def final_state(outcome: Mapping[str, Any]) -> Any:
    """COMPLETED, named after the verdict, carrying the outcome as the run's result."""
    from prefect.states import Completed

    status = outcome["status"]
    message = (outcome.get("notes") or [""])[-1][:500]
    return Completed(data=dict(outcome), name=STATE_NAMES.get(status, "Completed"), message=message)
