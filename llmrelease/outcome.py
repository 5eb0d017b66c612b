"""What a release ends in: a typed, JSON-able outcome with its exit code.

Kept free of heavy imports: the CLI, the demo and Python users read it without loading MLflow,
Prefect or vLLM. The release flow returns it as a dict (Prefect results must serialise);
:meth:`ReleaseOutcome.from_dict` turns that back into the typed value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["Status", "ReleaseOutcome", "EXIT_CODES", "exit_code_for"]

Status = Literal["promoted", "rejected", "inconclusive", "already_champion", "conflict", "test_engine"]

EXIT_CODES: dict[str, int] = {
    "promoted": 0,
    "already_champion": 0,
    "rejected": 1,
    "conflict": 3,
    "inconclusive": 5,
}
"""0 promoted or already champion, 1 a gate failed (nothing promoted), 3 the champion moved while
the candidate was evaluated, 5 no gate failed but at least one could not decide (the evalset is
too small to tell; nothing promoted). Raised before any outcome exists
(``LLMReleaseError.exit_code``): 2 invalid input (or a rolled-back candidate), 4 infrastructure
(the release could not complete)."""


def exit_code_for(status: str, decision: str | None) -> int:
    """A release's (or a router release's) exit code. A test engine's verdict moves nothing: it exits
    by the gates' decision on its outputs (pass 0, inconclusive 5, anything else 1)."""
    if status == "test_engine":
        return {"pass": 0, "inconclusive": EXIT_CODES["inconclusive"]}.get(decision or "", 1)
    return EXIT_CODES[status]


@dataclass
class ReleaseOutcome:
    app: str
    status: Status
    candidate_version: str
    prompt_version: int
    champion_before: str | None
    champion_after: str | None
    tracking_uri: str
    run_id: str | None = None
    report: dict[str, Any] | None = None
    """The gate report: ``passed``, ``decision`` (pass/fail/inconclusive), ``champion_version``,
    ``statistics`` (confidence, correction, power) and every gate's result."""
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    guard: dict[str, Any] | None = None
    """Guard rates, timing and flagged items, when the app has a guard."""
    shadow: dict[str, Any] | None = None
    """Shadow comparison headline numbers, when the app has a shadow spec and a champion."""
    mlflow_ui: str | None = None
    """The command that opens the MLflow UI on the store the release wrote to (set by the API)."""

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.status, self.report.get("decision") if self.report is not None else None)

    @property
    def passed(self) -> bool:
        """Whether every gate passed (an already-champion outcome ran no gates: True)."""
        return self.report is None or bool(self.report.get("passed"))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> ReleaseOutcome:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in {**data, **overrides}.items() if k in names})
