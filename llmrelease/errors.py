"""One error family for everything a user can get wrong.

Every error carries where (file, line, field), what (the reason) and how to fix it, so the CLI can
print it without a traceback and exit 2. Modelled on vLLM's VLLMValidationError and inspect's
PrerequisiteError: the message is the product.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "LLMReleaseError",
    "InputError",
    "SpecError",
    "EvalsetError",
    "UnknownNameError",
    "PromotionConflict",
]


class LLMReleaseError(Exception):
    """Base of every error llmrelease raises on purpose."""

    exit_code = 1


class InputError(LLMReleaseError):
    """Bad user input (a file, an option, a name). Exit code 2; nothing has been registered."""

    exit_code = 2

    def __init__(
        self,
        reason: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.reason = reason
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "")
        if self.field:
            where = f"{where}: field '{self.field}'" if where else f"field '{self.field}'"
        msg = f"{where}: {self.reason}" if where else self.reason
        if self.fix:
            msg += f"\n  fix: {self.fix}"
        return msg


class SpecError(InputError):
    """An invalid YAML spec under registry/ or an evalset card."""


class EvalsetError(InputError):
    """An invalid evalset row."""


class UnknownNameError(InputError):
    """A lookup that failed; the message lists what exists (lm-eval registry style)."""

    def __init__(
        self,
        kind: str,
        name: str,
        available: list[str],
        *,
        fix: str | None = None,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        listing = ", ".join(sorted(available)) if available else "none"
        super().__init__(
            f"unknown {kind} '{name}'; available: {listing}", fix=fix, file=file, line=line, field=field
        )


class PromotionConflict(LLMReleaseError):
    """The champion moved while the candidate was being evaluated: promotion refused (compare-and-set)."""

    exit_code = 3
