"""Reading the project's own files: UTF-8 text, JSON lines and paths that must stay in the project.

Every reader of a file a person edits (specs, cards, evalset rows, traffic logs) goes through here,
so a bad byte, a duplicate JSON key, a directory where a file belongs, or a symbolic link out of the
project is an InputError naming the file and line, never a traceback from the codec or the OS.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from llmrelease.errors import InputError, SpecError

__all__ = [
    "read_text",
    "numbered_lines",
    "decode_line",
    "json_object",
    "DuplicateKey",
    "bad_byte_reason",
    "field_of_bad_bytes",
    "link_outside",
    "check_inside",
    "check_file",
]


def bad_byte_reason(raw: bytes, exc: UnicodeDecodeError, *, offset: int = 0) -> tuple[str, int, int]:
    """The reason for a decode error in ``raw`` (bytes starting at file offset ``offset``), with the
    1-based line and column (in bytes) of the first bad byte inside ``raw``."""
    line = raw.count(b"\n", 0, exc.start) + 1
    column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
    shown = raw[exc.start : min(exc.end, exc.start + 4)].hex(" ")
    reason = (
        f"not UTF-8: byte(s) {shown} at byte offset {offset + exc.start} (column {column}) "
        f"cannot be decoded ({exc.reason})"
    )
    return reason, line, column


_UTF8_FIX = "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`), or remove the byte"


def _open(path: Path, error: type[InputError]) -> BinaryIO:
    """The file opened for reading; a missing file, a broken link or a directory is ``error``."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        if path.is_symlink():
            raise error(f"broken symbolic link to {os.readlink(path)}", file=path) from None
        raise error("file not found", file=path) from None
    except IsADirectoryError:
        raise error("is a directory; a file is expected here", file=path) from None
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror or exc}", file=path) from None


def _read_bytes(path: Path, error: type[InputError]) -> bytes:
    with _open(path, error) as fh:
        return fh.read()


def read_text(path: Path, *, error: type[InputError] = SpecError) -> str:
    """The whole file as text; a byte that is not UTF-8 names its line and byte offset."""
    raw = _read_bytes(path, error)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        reason, line, _ = bad_byte_reason(raw, exc)
        raise error(reason, file=path, line=line, fix=_UTF8_FIX) from None


def decode_line(raw: bytes, *, first: bool = False) -> str:
    """One line of a JSONL file; raises UnicodeDecodeError. A UTF-8 byte-order mark on the first
    line is dropped (editors on Windows write one)."""
    text = raw.decode("utf-8")
    return text.removeprefix("\ufeff") if first else text


def numbered_lines(path: Path, *, error: type[InputError]) -> Iterator[tuple[int, str]]:
    """(line number, text) for every line, streamed; lines are split at ``\\n`` only, as an editor
    numbers them. A line that is not UTF-8 raises ``error`` naming the line and byte offset."""
    fh = _open(path, error)
    offset = 0
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = decode_line(raw, first=lineno == 1)
            except UnicodeDecodeError as exc:
                reason, _, _ = bad_byte_reason(raw, exc, offset=offset)
                raise error(
                    reason, file=path, line=lineno, field=field_of_bad_bytes(raw), fix=_UTF8_FIX
                ) from None
            offset += len(raw)
            yield lineno, text


def field_of_bad_bytes(raw: bytes) -> str | None:
    """Where in a JSON line the undecodable bytes sit (e.g. ``vars.ticket``), if the line is JSON."""
    try:
        data = json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        return None

    def walk(value: Any, path: str) -> str | None:
        if isinstance(value, str):
            return path if "\ufffd" in value else None
        if isinstance(value, dict):
            for k, v in value.items():
                sub = f"{path}.{k}" if path else str(k)
                if "\ufffd" in str(k):
                    return sub
                found = walk(v, sub)
                if found:
                    return found
        if isinstance(value, list):
            for i, v in enumerate(value):
                found = walk(v, f"{path}[{i}]")
                if found:
                    return found
        return None

    return walk(data, "")


class DuplicateKey(ValueError):
    """A JSON object with the same key twice (json keeps the last one silently)."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"duplicate key '{key}' in a JSON object (JSON keeps only the last one)")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKey(k)
        out[k] = v
    return out


def json_object(line: str) -> Any:
    """``json.loads`` that refuses duplicate keys (DuplicateKey); raises json.JSONDecodeError too."""
    return json.loads(line, object_pairs_hook=_no_duplicates)


# ------------------------------------------------------------------------------------ containment


def link_outside(path: Path, root: Path) -> tuple[Path, Path] | None:
    """(link, target) when ``path``, written inside ``root``, leads out of it through a symbolic
    link; None when it stays inside, or when it is written outside ``root`` (an explicit choice)."""
    root = Path(os.path.realpath(root))
    lexical = Path(os.path.normpath(path if path.is_absolute() else root / path))
    try:
        parts = lexical.relative_to(root).parts
    except ValueError:
        return None
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            target = Path(os.path.realpath(current))
            if not target.is_relative_to(root):
                return current, target
    return None


def check_inside(
    path: Path,
    root: Path,
    *,
    error: type[InputError] = SpecError,
    file: Path | str | None = None,
    line: int | None = None,
    field: str | None = None,
) -> None:
    """Refuse a path inside the project that a symbolic link leads out of it: what is released must
    be what is in the project (and in its Git history), not whatever a link points at today."""
    found = link_outside(path, root)
    if found is None:
        return
    link, target = found
    what = "is a symbolic link" if file is None else f"{link} is a symbolic link"
    raise error(
        f"{what} to {target}, outside the project {Path(os.path.realpath(root))}",
        file=file if file is not None else link,
        line=line,
        field=field,
        fix="copy the file into the project (links that stay inside the project are fine)",
    )


def check_file(path: Path, *, error: type[InputError] = SpecError, what: str = "file") -> None:
    """Refuse a missing file, a broken link or a directory where a file is expected."""
    if path.is_file():
        return
    if path.is_symlink() and not path.exists():
        raise error(f"broken symbolic link to {os.readlink(path)}", file=path)
    if path.is_dir():
        raise error(f"is a directory; a {what} is expected here", file=path)
    raise error(f"{what} not found", file=path)
