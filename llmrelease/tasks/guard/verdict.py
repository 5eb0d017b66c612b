"""Parse a Llama Guard answer: ``safe``, or ``unsafe`` and a line of violated category codes.

Pure; no model. Anything else fails closed: it counts as unsafe and is reported as unparsed, so a
guard that stops following its format can never wave a candidate through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Verdict", "parse_verdict"]

_CODE = re.compile(r"^[A-Z]+[0-9]+$")


@dataclass(frozen=True)
class Verdict:
    unsafe: bool
    categories: tuple[str, ...] = ()
    parsed: bool = True
    raw: str = ""

    @property
    def label(self) -> str:
        """Short form for tables: ``safe``, ``unsafe:S1,S10``, ``unparsed``."""
        if not self.parsed:
            return "unparsed"
        if not self.unsafe:
            return "safe"
        return "unsafe" + (":" + ",".join(self.categories) if self.categories else "")


def parse_verdict(text: str, known_codes: list[str] | tuple[str, ...] | None = None) -> Verdict:
    """First non-empty line ``safe`` or ``unsafe`` (case-insensitive); for ``unsafe`` the next
    non-empty line lists codes separated by commas. A code outside ``known_codes`` makes the verdict
    unparsed (still unsafe): the guard answered outside the policy it was given."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    if not lines:
        return Verdict(True, (), False, text)
    head = lines[0].lower()
    if head == "safe":
        return Verdict(False, (), True, text)
    if head != "unsafe":
        return Verdict(True, (), False, text)
    if len(lines) < 2:
        return Verdict(True, (), True, text)  # unsafe without codes: still a clear verdict
    codes = tuple(dict.fromkeys(c.strip().upper() for c in lines[1].split(",") if c.strip()))
    if not codes or not all(_CODE.match(c) for c in codes):
        return Verdict(True, (), False, text)
    if known_codes is not None and any(c not in known_codes for c in codes):
        return Verdict(True, codes, False, text)
    return Verdict(True, codes, True, text)
