"""Traffic logs: recorded production requests, read line by line from a local file or S3, filtered
by app and time window, sampled (first N, or N uniformly at random with a seed).

Bad lines are reported with file and line; they stop the run unless the shadow spec says to skip
them. Sampling streams: a random sample of N holds N records (reservoir), never the whole log.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llmrelease.errors import EvalsetError, InputError
from llmrelease.inputfiles import (
    DuplicateKey,
    bad_byte_reason,
    decode_line,
    field_of_bad_bytes,
    json_object,
)
from llmrelease.specs import TrafficRecord, TrafficSpec

__all__ = ["TrafficSample", "read_traffic", "open_lines", "TrafficError"]


class TrafficError(EvalsetError):
    """A bad traffic log line (same shape as an evalset error: file, line, field)."""


@dataclass
class TrafficSample:
    records: list[TrafficRecord]
    source: str
    lines_read: int = 0
    matched: int = 0
    """Lines for this app inside the time window (before sampling)."""
    skipped: list[str] = field(default_factory=list)
    """``file:line: reason`` for every bad line skipped (``on_bad_line: skip``)."""
    lines: list[int] = field(default_factory=list)
    """The log's line number of each record (same order as ``records``); empty when not known."""
    where: str = ""
    """The log as errors name it: the local file's path, or the ``s3://`` URI."""

    def line_of(self, index: int) -> int | None:
        return self.lines[index] if index < len(self.lines) else None


def _s3_lines(uri: str) -> Iterator[bytes]:
    import boto3

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise InputError(f"traffic source {uri!r} is not s3://bucket/key")
    # boto3 reads AWS_ENDPOINT_URL(_S3) itself; MLFLOW_S3_ENDPOINT_URL is honoured too, so one
    # S3-compatible store configured for MLflow artifacts also serves the traffic logs.
    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL") if not os.environ.get("AWS_ENDPOINT_URL_S3") else None
    client = boto3.client("s3", endpoint_url=endpoint) if endpoint else boto3.client("s3")
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
    except client.exceptions.NoSuchKey:
        raise InputError(f"traffic log not found: {uri}") from None
    except Exception as exc:  # noqa: BLE001 - botocore's errors: name the object and the reason
        raise InputError(f"cannot read traffic log {uri}: {exc}") from None
    yield from body.iter_lines()


def _raw_lines(source: str, project_root: Path) -> Iterator[bytes]:
    """Undecoded lines of a local file (relative to the project) or of an S3 object, streamed."""
    if source.startswith("s3://"):
        yield from _s3_lines(source)
        return
    path = Path(source).expanduser()
    path = path if path.is_absolute() else project_root / path
    if path.is_dir():
        raise TrafficError("is a directory; a JSONL traffic log is expected here", file=path)
    if not path.is_file():
        raise InputError(f"traffic log not found: {path}", file=path)
    with path.open("rb") as fh:
        for line in fh:
            yield line.rstrip(b"\n")


def open_lines(source: str, project_root: Path) -> Iterator[str]:
    """Lines of a local file (relative to the project) or of an S3 object, streamed; a line that is
    not UTF-8 raises TrafficError naming the line and byte offset."""
    offset = 0
    for lineno, raw in enumerate(_raw_lines(source, project_root), start=1):
        try:
            yield decode_line(raw, first=lineno == 1)
        except UnicodeDecodeError as exc:
            reason, _, _ = bad_byte_reason(raw, exc, offset=offset)
            raise TrafficError(
                reason, file=_where(source, project_root), line=lineno, field=field_of_bad_bytes(raw)
            ) from None
        offset += len(raw) + 1


def _where(source: str, project_root: Path) -> str:
    if source.startswith("s3://"):
        return source
    path = Path(source).expanduser()
    return str(path if path.is_absolute() else project_root / path)


def _bad(
    spec: TrafficSpec, where: str, lineno: int, reason: str, field_: str | None, out: TrafficSample
) -> None:
    if spec.on_bad_line == "fail":
        raise TrafficError(
            reason,
            file=where,
            line=lineno,
            field=field_,
            fix="fix the line, or set traffic.on_bad_line: skip in shadow.yaml to skip bad lines",
        )
    out.skipped.append(f"{where}:{lineno}: {reason}" + (f" (field '{field_}')" if field_ else ""))


def _explain(exc: ValidationError) -> tuple[str, str | None]:
    """The most useful reason first: a misspelt field explains the 'missing' one it replaces."""
    errors = exc.errors()
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    missing = [".".join(str(p) for p in e["loc"]) for e in errors if e["type"] == "missing"]
    if extra:
        loc = ".".join(str(p) for p in extra[0]["loc"])
        hint = f"; required: {', '.join(missing)}" if missing else ""
        return f"unknown field '{loc}' (typo?{hint})", loc
    err = errors[0]
    loc = ".".join(str(p) for p in err["loc"]) or None
    return ("required field is missing" if err["type"] == "missing" else err["msg"]), loc


def _parse(line: str) -> dict[str, Any]:
    data = json_object(line)
    if not isinstance(data, dict):
        raise ValueError("each line must be a JSON object")
    return data


def read_traffic(
    spec: TrafficSpec, app: str, *, project_root: Path, variables: list[str] | None = None
) -> TrafficSample:
    """The sampled records of ``app``. ``variables``: the template variables a ``vars`` record must
    have (missing ones make the line bad)."""
    where = _where(spec.source, project_root)
    out = TrafficSample([], spec.source, where=where)
    rng = random.Random(spec.seed)
    offset = 0
    for lineno, raw in enumerate(_raw_lines(spec.source, project_root), start=1):
        out.lines_read = lineno
        try:
            line = decode_line(raw, first=lineno == 1)
        except UnicodeDecodeError as exc:
            reason = bad_byte_reason(raw, exc, offset=offset)[0]
            _bad(spec, where, lineno, reason, field_of_bad_bytes(raw), out)
            continue
        finally:
            offset += len(raw) + 1
        if not line.strip():
            continue
        try:
            data = _parse(line)
        except json.JSONDecodeError as exc:
            _bad(spec, where, lineno, f"not valid JSON: {exc.msg} (column {exc.colno})", None, out)
            continue
        except DuplicateKey as exc:
            _bad(spec, where, lineno, str(exc), exc.key, out)
            continue
        except ValueError as exc:
            _bad(spec, where, lineno, str(exc), None, out)
            continue
        try:
            rec = TrafficRecord.model_validate(data)
        except ValidationError as exc:
            reason, loc = _explain(exc)
            _bad(spec, where, lineno, reason, loc, out)
            continue
        if rec.app != app:
            continue
        if variables and rec.vars is not None:
            missing = [v for v in variables if v not in rec.vars]
            if missing:
                _bad(
                    spec,
                    where,
                    lineno,
                    f"missing template variable(s) {', '.join(missing)}",
                    "vars",
                    out,
                )
                continue
        if (spec.since and rec.timestamp < spec.since) or (spec.until and rec.timestamp >= spec.until):
            continue
        if rec.id is None:
            rec = rec.model_copy(update={"id": f"line-{lineno}"})
        out.matched += 1
        if spec.sample == "first":
            out.records.append(rec)
            out.lines.append(lineno)
            if len(out.records) >= spec.n:
                break
        elif len(out.records) < spec.n:  # reservoir sampling (Algorithm R)
            out.records.append(rec)
            out.lines.append(lineno)
        else:
            j = rng.randrange(out.matched)
            if j < spec.n:
                out.records[j] = rec
                out.lines[j] = lineno
    if not out.records:
        raise InputError(
            f"no requests for app '{app}' in {spec.source}"
            + (" inside the time window" if spec.since or spec.until else ""),
            file=where,
            fix="check the log's 'app' values and traffic.since/until in shadow.yaml",
        )
    if spec.sample == "random":
        order = sorted(range(len(out.records)), key=lambda i: out.records[i].timestamp)
        out.records = [out.records[i] for i in order]
        out.lines = [out.lines[i] for i in order]
    return out
