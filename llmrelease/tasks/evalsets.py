"""Evalset rows: read line by line, validated with file and line numbers, then held as a `datasets` Dataset.

A bad line stops the release before anything is registered.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from llmrelease.errors import EvalsetError
from llmrelease.project import AppSpec, EvalsetRef
from llmrelease.specs import EvalsetRow

__all__ = ["Evalset", "read_evalset", "load_evalsets", "rows_digest"]


@dataclass(frozen=True)
class Evalset:
    ref: EvalsetRef
    rows: list[EvalsetRow]
    dataset: Any  # datasets.Dataset: columns id, vars, reference (JSON text), tags
    digest: str
    """sha256 (first 16 hex digits) over every row's canonical JSON. MLflow's own dataset digest
    hashes only the first 10,000 rows and skips list columns, so it can miss a change."""

    @property
    def name(self) -> str:
        return self.ref.name


def _row_error(ref: EvalsetRef, lineno: int, exc: ValidationError) -> EvalsetError:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or None
    reason = {"missing": "required field is missing", "extra_forbidden": "unknown field (typo?)"}.get(
        err["type"], err["msg"]
    )
    return EvalsetError(reason, file=ref.path, line=lineno, field=field)


def read_evalset(ref: EvalsetRef, variables: list[str]) -> list[EvalsetRow]:
    """Validate every line: JSON, row schema, template variables present, ids unique."""
    rows: list[EvalsetRow] = []
    seen: dict[str, int] = {}
    with ref.path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalsetError(
                    f"not valid JSON: {exc.msg} (column {exc.colno})", file=ref.path, line=lineno
                ) from None
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
            if row.id in seen:
                raise EvalsetError(
                    f"duplicate id '{row.id}' (first on line {seen[row.id]})",
                    file=ref.path,
                    line=lineno,
                    field="id",
                )
            seen[row.id] = lineno
            rows.append(row)
    if not rows:
        raise EvalsetError("evalset is empty", file=ref.path)
    return rows


def _to_dataset(rows: list[EvalsetRow]) -> Any:
    import datasets

    return datasets.Dataset.from_dict(
        {
            "id": [r.id for r in rows],
            "vars": [json.dumps(r.vars, ensure_ascii=False, sort_keys=True) for r in rows],
            "reference": [json.dumps(r.reference, ensure_ascii=False, sort_keys=True) for r in rows],
            "tags": [r.tags for r in rows],
        }
    )


def rows_digest(rows: list[EvalsetRow]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r.model_dump(), sort_keys=True, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def load_evalsets(app: AppSpec) -> list[Evalset]:
    variables = app.prompt.variables
    out = []
    for ref in app.evalsets:
        rows = read_evalset(ref, variables)
        out.append(Evalset(ref, rows, _to_dataset(rows), rows_digest(rows)))
    return out
