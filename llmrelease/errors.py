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
    "RolledBackRefused",
    "InfrastructureError",
    "error_payload",
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


class RolledBackRefused(InputError):
    """The candidate is a version that was rolled back: releasing it again needs --allow-rolled-back."""


class InfrastructureError(LLMReleaseError):
    """Something the user's input did not cause stopped the release: the tracking server is
    unreachable, a champion's artifacts are missing, the engine crashed. Exit code 4, one line of
    cause; whatever was written is consistent (aliases move only under the promotion lock)."""

    exit_code = 4


def error_payload(exc: BaseException) -> dict[str, object]:
    """The JSON object ``--json`` prints for an error: the same fields the text message shows."""
    if isinstance(exc, InputError):
        kind, fields = "input", {"file": exc.file, "line": exc.line, "field": exc.field, "fix": exc.fix}
        message = exc.reason
    elif isinstance(exc, PromotionConflict):
        kind, fields, message = "conflict", {}, str(exc)
    else:
        kind, fields, message = "infrastructure", {}, str(exc)
    code = exc.exit_code if isinstance(exc, LLMReleaseError) else InfrastructureError.exit_code
    return {"status": "error", "exit_code": code, "error": {"kind": kind, "message": message, **fields}}
