"""Production feedback as a signal beside the evalset scores: what users said about each version.

The latest harvest run of an app holds a summary per served version (negative share with its
interval). ``llmrelease status`` shows the champion's; the nightly check compares the champion's
negative share with the previous champion's on the same harvest and flags a rise that chance does
not explain (one-sided Fisher exact test: small counts are the norm for feedback).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from llmrelease.mlflow_registry import TAG, MlflowRegistry
from llmrelease.tasks.feedback.harvest import snapshot_name

__all__ = ["FeedbackCheck", "latest_summary", "version_row", "compare_negative", "check_feedback", "ALPHA"]

ALPHA = 0.05
"""One-sided: the chance of flagging a champion whose users are in fact no less happy."""


def latest_summary(registry: MlflowRegistry, app: str) -> tuple[str, dict[str, Any]] | None:
    """(run id, summary) of the app's latest finished harvest run, or None."""
    found = registry.latest_run(app, kind="harvest")
    if found is None:
        return None
    run_id, tags = found
    digest = tags.get(TAG + "harvest.summary")
    if not digest:
        return None
    try:
        path = f"harvest/{snapshot_name('summary', digest, '.json')}"
        return run_id, registry.load_artifact_dict(run_id, path)
    except Exception:  # noqa: BLE001 - a harvest whose artifact is gone: no signal, not an error
        return None


def version_row(
    summary: dict[str, Any], version: str | None, prompt_version: int | None
) -> dict[str, Any] | None:
    if version is None or prompt_version is None:
        return None
    label = f"v{version}/prompt v{prompt_version}"
    return next((row for row in summary.get("per_version", []) if row["served"] == label), None)


@dataclass(frozen=True)
class FeedbackCheck:
    champion: str
    previous: str
    champion_negative: int
    champion_feedback: int
    previous_negative: int
    previous_feedback: int
    p_value: float
    flagged: bool
    harvest_run_id: str = ""

    @property
    def text(self) -> str:
        c = self.champion_negative / self.champion_feedback if self.champion_feedback else 0.0
        p = self.previous_negative / self.previous_feedback if self.previous_feedback else 0.0
        verdict = "ROSE" if self.flagged else "no significant rise"
        return (
            f"negative feedback {verdict}: {self.champion} {c:.0%} ({self.champion_negative}/"
            f"{self.champion_feedback}) vs {self.previous} {p:.0%} ({self.previous_negative}/"
            f"{self.previous_feedback}), one-sided Fisher p={self.p_value:.3g}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "text": self.text}


def compare_negative(
    champion: dict[str, Any], previous: dict[str, Any], *, alpha: float = ALPHA
) -> FeedbackCheck:
    """Is the champion's negative share higher than the previous champion's? Pure."""
    from scipy.stats import fisher_exact

    cn, cf = int(champion["negative"]), int(champion["feedback"])
    pn, pf = int(previous["negative"]), int(previous["feedback"])
    if cf == 0 or pf == 0:
        p = 1.0
    else:
        p = float(fisher_exact([[cn, cf - cn], [pn, pf - pn]], alternative="greater").pvalue)
    return FeedbackCheck(champion["served"], previous["served"], cn, cf, pn, pf, p, p <= alpha)


def check_feedback(
    registry: MlflowRegistry,
    app: str,
    champion: tuple[str, int | None],
    previous: tuple[str, int | None] | None,
) -> FeedbackCheck | None:
    """The comparison on the latest harvest, or None when there is no harvest or either version has
    no feedback in it."""
    found = latest_summary(registry, app)
    if found is None or previous is None:
        return None
    run_id, summary = found
    now, before = version_row(summary, *champion), version_row(summary, *previous)
    if now is None or before is None or not now["feedback"] or not before["feedback"]:
        return None
    return replace(compare_negative(now, before), harvest_run_id=run_id)
