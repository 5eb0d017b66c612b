"""Which apps a push touches: pure, so the rule is easy to read and to test.

An app is released when anything under ``registry/<app>/`` or ``evalsets/<app>/`` changed. Files
elsewhere (README, code, CI) release nothing: the pipeline does not guess at their effect.
"""

from __future__ import annotations

from pathlib import PurePosixPath

__all__ = ["apps_touched"]


def apps_touched(paths: list[str], apps: list[str], *, subdir: str = "") -> list[str]:
    """Apps (of ``apps``, the ones that exist at the pushed commit) with a changed file.

    ``subdir``: where the project lives inside the repository ("" for the repository root)."""
    prefix = PurePosixPath(subdir) if subdir not in ("", ".") else None
    touched: set[str] = set()
    for raw in paths:
        path = PurePosixPath(raw)
        if prefix is not None:
            if not path.is_relative_to(prefix):
                continue
            path = path.relative_to(prefix)
        parts = path.parts
        if len(parts) >= 3 and parts[0] in ("registry", "evalsets") and parts[1] in apps:
            touched.add(parts[1])
    return sorted(touched)
