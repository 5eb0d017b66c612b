"""Evalset rows: validated line by line with file and line numbers, then streamed in chunks.

A bad line stops the release before anything is registered. Loading keeps only what the release
needs up front (row count, content digest); every later step (generation, the guard, a champion
re-evaluation) reads the rows again in chunks, so memory does not grow with the evalset. The
digest is checked again on every read: a file edited while a release runs fails that release
instead of scoring rows other than the ones registered.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from llmrelease.errors import EvalsetError, InputError
from llmrelease.inputfiles import DuplicateKey, json_object, numbered_lines
from llmrelease.project import AppSpec, EvalsetRef
from llmrelease.specs import EvalsetRow
from llmrelease.tasks.evaluation.scoring import reference_has_field

__all__ = [
    "Evalset",
    "read_evalset",
    "scan_evalset",
    "numbered_rows",
    "load_evalsets",
    "rows_digest",
    "chunk_rows",
    "DEFAULT_CHUNK_ROWS",
]

DEFAULT_CHUNK_ROWS = 2048
"""Rows per chunk through generation, scoring and the guard. Large enough that an engine's batch
stays full (vLLM also gets the next chunk before this one drains), small enough that a chunk's
conversations, outputs and records are a few megabytes."""


def chunk_rows() -> int:
    """``LLMRELEASE_CHUNK_ROWS`` or the default."""
    raw = os.environ.get("LLMRELEASE_CHUNK_ROWS", "")
    if not raw:
        return DEFAULT_CHUNK_ROWS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"LLMRELEASE_CHUNK_ROWS={raw!r} must be a positive integer", fix="e.g. 2048")
    return value


@dataclass(frozen=True)
class Evalset:
    """A validated evalset: its file, row count and digest; rows are read when needed."""

    ref: EvalsetRef
    variables: tuple[str, ...]
    size: int
    digest: str
    """sha256 (first 16 hex digits) over every row's canonical JSON. MLflow's own dataset digest
    hashes only the first 10,000 rows and skips list columns, so it can miss a change."""

    @property
    def name(self) -> str:
        return self.ref.name

    def batches(self, size: int | None = None) -> Iterator[list[EvalsetRow]]:
        """The rows in file order, ``size`` at a time (default :func:`chunk_rows`)."""
        size = size or chunk_rows()
        h = hashlib.sha256()
        chunk: list[EvalsetRow] = []
        for _, row in _parse(self.ref, list(self.variables), unique=False):
            _hash_row(h, row)
            chunk.append(row)
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        if _hex(h) != self.digest:
            raise EvalsetError(
                f"changed on disk while the release was running (digest {self.digest} when loaded, "
                f"{_hex(h)} now); re-run the release",
                file=self.ref.path,
            )

    def shuffled_batches(self, seed: int, size: int | None = None) -> Iterator[list[EvalsetRow]]:
        """Every row in a seeded random order, ``size`` at a time: what sequential gates stream, so
        that stopping early judges a random sample, not the head of a file sorted by topic or
        difficulty. Holds the rows in memory (one evalset at a time)."""
        import random

        rows = self.rows()
        random.Random(f"{seed}:{self.digest}").shuffle(rows)
        size = size or chunk_rows()
        for start in range(0, len(rows), size):
            yield rows[start : start + size]

    def clusters(self) -> dict[str, str] | None:
        """Item id -> cluster label when the card names a ``cluster`` key, else None (items are
        independent). Read in one streaming pass; labels are short, so this stays small."""
        key = self.ref.card.cluster
        if not key:
            return None
        return {row.id: row.cluster_of(key) or "" for chunk in self.batches() for row in chunk}

    def rows(self) -> list[EvalsetRow]:
        """Every row at once: for small evalsets and tests; the release streams :meth:`batches`."""
        return [row for chunk in self.batches() for row in chunk]

    @contextmanager
    def hf_dataset(self) -> Iterator[Any]:
        """The rows as a ``datasets.Dataset`` (columns id, vars and reference as JSON text, tags),
        written to a temporary Arrow file and memory-mapped, for logging as an MLflow run input."""
        import datasets

        features = datasets.Features(
            {
                "id": datasets.Value("string"),
                "vars": datasets.Value("string"),
                "reference": datasets.Value("string"),
                "tags": datasets.Sequence(datasets.Value("string")),
            }
        )
        with tempfile.TemporaryDirectory(prefix="llmrelease-ds-") as tmp:
            enabled = datasets.is_progress_bar_enabled()
            datasets.disable_progress_bars()
            try:
                ds = datasets.Dataset.from_generator(
                    _dataset_rows, gen_kwargs={"evalset": self}, features=features, cache_dir=tmp
                )
            finally:
                if enabled:
                    datasets.enable_progress_bars()
            yield ds
            del ds


def _dataset_rows(evalset: Evalset) -> Iterator[dict[str, Any]]:
    for chunk in evalset.batches():
        for r in chunk:
            yield {
                "id": r.id,
                "vars": json.dumps(r.vars, ensure_ascii=False, sort_keys=True),
                "reference": json.dumps(r.reference, ensure_ascii=False, sort_keys=True),
                "tags": r.tags,
            }


def _row_error(ref: EvalsetRef, lineno: int, exc: ValidationError) -> EvalsetError:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or None
    reason = {"missing": "required field is missing", "extra_forbidden": "unknown field (typo?)"}.get(
        err["type"], err["msg"]
    )
    return EvalsetError(reason, file=ref.path, line=lineno, field=field)


def _parse(ref: EvalsetRef, variables: list[str], *, unique: bool = True) -> Iterator[tuple[int, EvalsetRow]]:
    """(line number, row) for every non-blank line: JSON, row schema, template variables present,
    and with ``unique`` ids not repeated. The first bad line raises, naming file, line and field."""
    seen: dict[str, int] = {}
    any_rows = False
    fields = sorted({s.field for s in ref.card.scorers if s.field})
    for lineno, line in numbered_lines(ref.path, error=EvalsetError):
        if not line.strip():
            continue
        try:
            data = json_object(line)
        except json.JSONDecodeError as exc:
            raise EvalsetError(
                f"not valid JSON: {exc.msg} (column {exc.colno})", file=ref.path, line=lineno
            ) from None
        except DuplicateKey as exc:
            raise EvalsetError(str(exc), file=ref.path, line=lineno, field=exc.key) from None
        if not isinstance(data, dict):
            raise EvalsetError("each line must be a JSON object", file=ref.path, line=lineno)
        try:
            row = EvalsetRow.model_validate(data)
        except ValidationError as exc:
            raise _row_error(ref, lineno, exc) from None
        missing = [v for v in variables if v not in row.vars]
        if missing:
            raise EvalsetError(
                f"missing template variable(s) {', '.join(missing)}; "
                f"the prompt uses {', '.join(variables)}",
                file=ref.path,
                line=lineno,
                field="vars",
            )
        if row.reference is None and ref.card.needs_reference:
            raise EvalsetError(
                "required field is missing (the card's exact_match/rouge_l scorers compare with it)",
                file=ref.path,
                line=lineno,
                field="reference",
            )
        if row.reference is not None:
            for key in fields:
                if not reference_has_field(row.reference, key):
                    raise EvalsetError(
                        f"the reference has no '{key}' (a scorer of the card compares that field; "
                        "without it every answer would match nothing against nothing)",
                        file=ref.path,
                        line=lineno,
                        field=f"reference.{key}",
                    )
        if ref.card.cluster and row.cluster_of(ref.card.cluster) is None:
            raise EvalsetError(
                f"the card clusters rows by '{ref.card.cluster}', and this row has no such key",
                file=ref.path,
                line=lineno,
                field=ref.card.cluster,
            )
        if unique:
            if row.id in seen:
                raise EvalsetError(
                    f"duplicate id '{row.id}' (first on line {seen[row.id]})",
                    file=ref.path,
                    line=lineno,
                    field="id",
                )
            seen[row.id] = lineno
        any_rows = True
        yield lineno, row
    if not any_rows:
        raise EvalsetError("evalset is empty", file=ref.path)


def numbered_rows(evalset: Evalset) -> Iterator[tuple[int, EvalsetRow]]:
    """(line number, row) in file order, validated as when the evalset was loaded."""
    return _parse(evalset.ref, list(evalset.variables), unique=False)


def read_evalset(ref: EvalsetRef, variables: list[str]) -> list[EvalsetRow]:
    """Every row, validated (ids unique); raises on the first bad line."""
    return [row for _, row in _parse(ref, variables)]


def _hash_row(h: Any, row: EvalsetRow) -> None:
    # A row without ``meta`` hashes as it did before the field existed: digests of stored
    # champions stay valid, so adding the field forced no re-evaluation.
    data = row.model_dump(exclude=None if row.meta else {"meta"})
    h.update(json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    h.update(b"\n")


def _hex(h: Any) -> str:
    return h.hexdigest()[:16]


def rows_digest(rows: list[EvalsetRow]) -> str:
    h = hashlib.sha256()
    for r in rows:
        _hash_row(h, r)
    return _hex(h)


def scan_evalset(ref: EvalsetRef, variables: list[str]) -> Evalset:
    """Validate every line in one streaming pass; keep the row count and digest, not the rows."""
    h = hashlib.sha256()
    size = 0
    for _, row in _parse(ref, variables):
        _hash_row(h, row)
        size += 1
    return Evalset(ref, tuple(variables), size, _hex(h))


def load_evalsets(app: AppSpec) -> list[Evalset]:
    """Every evalset of the app, scanned (:func:`scan_evalset`)."""
    chunk_rows()  # a bad LLMRELEASE_CHUNK_ROWS fails here, before anything is registered
    return [scan_evalset(ref, app.prompt.variables) for ref in app.evalsets]
