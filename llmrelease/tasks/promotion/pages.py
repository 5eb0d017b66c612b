"""The version pages: each model version's MLflow description says why it may or may not be
champion (its release's summary) and what happened to it since (promoted, replaced, rolled back,
overridden, reverted), so a person deciding in the MLflow UI reads the evidence where they decide."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmrelease.mlflow_registry import TAG, MlflowRegistry, utc_now
from llmrelease.tasks.reporting.version_page import HISTORY_MARKER, release_summary, with_history

if TYPE_CHECKING:
    from llmrelease.tasks.promotion.candidate import Candidate

__all__ = ["run_links", "write_version_page", "note_on_version"]


def run_links(experiment_id: str, run_id: str, *, shadow: bool = False) -> list[tuple[str, str]]:
    """Links from a version page to its release run, relative to the MLflow UI it is shown in."""
    run = f"#/experiments/{experiment_id}/runs/{run_id}"
    links = [
        ("release run", run),
        ("release report", f"{run}/artifacts/release_report.html"),
        ("items (evaluation view)", f"{run}/evaluations"),
        ("gate_report.json", f"{run}/artifacts/gate_report.json"),
    ]
    if shadow:
        links.append(("shadow report", f"{run}/artifacts/shadow/report.html"))
    return links


def write_version_page(
    registry: MlflowRegistry,
    candidate: Candidate,
    run_id: str,
    verdict: str,
    report: dict[str, Any],
    *,
    champion_source: str | None = None,
    guard: dict[str, Any] | None = None,
    shadow: dict[str, Any] | None = None,
) -> None:
    """The model version's description (rendered as markdown on its MLflow page) says why it may or
    may not be champion; the prompt version carries the same summary as a tag. The history a
    version had before (an earlier release of the same candidate) is kept below it."""
    app, version = candidate.app, candidate.version.version
    summary = release_summary(
        app=app,
        version=version,
        prompt_version=candidate.prompt_version,
        verdict=verdict,
        report=report,
        run_id=run_id,
        champion_scores=champion_source,
        guard=guard,
        shadow=shadow,
        links=run_links(registry.experiment_id(app), run_id, shadow=shadow is not None),
    )
    _, marker, history = registry.version_description(app, version).partition(HISTORY_MARKER)
    registry.set_version_description(app, version, summary + ("\n\n" + marker + history if marker else ""))
    registry.set_prompt_version_tags(
        app,
        candidate.prompt_version,
        {
            TAG + "last_release": f"model v{version}: {verdict} (run {run_id})",
            TAG + "release_summary": summary,
        },
    )


def note_on_version(registry: MlflowRegistry, app: str, version: str, line: str) -> str | None:
    """Add ``line`` (dated) to the version page's history. Best effort: the page is evidence, not
    state, so a failed write is returned as a note for the outcome instead of undoing a decision
    the registry already holds."""
    try:
        text = with_history(registry.version_description(app, version), f"{utc_now()}: {line}")
        registry.set_version_description(app, version, text)
    except Exception as exc:  # any store error: the decision stands, the note says the page lags
        return f"could not update the page of v{version}: {exc}"
    return None
