"""Promotion: move the aliases only when every gate passed, with compare-and-set on the champion
the candidate was compared against, all or nothing (:mod:`.transaction`); a test engine's verdict
never moves one."""

from __future__ import annotations

from typing import Protocol

from llmrelease.errors import PromotionConflict
from llmrelease.faults import checkpoint
from llmrelease.mlflow_registry import MlflowRegistry, VersionInfo
from llmrelease.outcome import Status
from llmrelease.tasks.gates.decisions import GateReport
from llmrelease.tasks.promotion.pages import note_on_version
from llmrelease.tasks.promotion.transaction import promote_version

__all__ = ["promote", "Promotable"]


class Promotable(Protocol):
    """What promotion needs of a candidate (a model version, or a router's version)."""

    @property
    def app(self) -> str: ...
    @property
    def version(self) -> VersionInfo: ...
    @property
    def champion(self) -> VersionInfo | None: ...
    @property
    def engine_factory(self) -> str: ...
    @property
    def test_engine(self) -> bool: ...


def promote(
    registry: MlflowRegistry, candidate: Promotable, report: GateReport, run_id: str
) -> tuple[Status, str]:
    """Move the aliases only when every gate passed and the champion is still the one compared against."""
    if candidate.test_engine:
        return "test_engine", (
            f"not promoted: evaluated with a test engine ({candidate.engine_factory}); gates "
            f"{'passed' if report.passed else 'failed'} on its outputs, which say nothing about the model"
        )
    if report.failed:
        names = ", ".join(r.name for r in report.failed)
        return "rejected", f"not promoted: gate(s) failed: {names}"
    if not report.passed:
        undecided = report.inconclusive
        needed = [r.items_needed for r in undecided if r.items_needed]
        more = f"; about {max(needed)} items would decide them" if needed else ""
        names = ", ".join(r.name for r in undecided)
        return "inconclusive", (
            f"not promoted: gate(s) inconclusive: {names} (no gate failed, but the evalset is too small "
            f"to show the candidate is within the margin{more})"
        )
    checkpoint("promote.gates_passed")
    try:
        moved, notes = promote_version(
            registry,
            candidate.app,
            candidate.version,
            expected_champion=candidate.champion.version if candidate.champion else None,
            run_id=run_id,
        )
    except PromotionConflict as exc:
        return "conflict", str(exc)
    if not moved:
        return "already_champion", "; ".join(notes)
    before = f"v{candidate.champion.version}" if candidate.champion else "none"
    done = f"promoted v{candidate.version.version} to champion (previous champion: {before})"
    app, version = candidate.app, candidate.version.version
    pages = [note_on_version(registry, app, version, f"**promoted** by run `{run_id}` (replaced {before})")]
    if candidate.champion:
        line = f"replaced as champion by v{version} (run `{run_id}`)"
        pages.append(note_on_version(registry, app, candidate.champion.version, line))
    return "promoted", "; ".join([*notes, done, *[p for p in pages if p]])
