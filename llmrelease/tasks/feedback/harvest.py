"""Feedback on logged requests -> a regression evalset, an SFT set, a preference set and a summary.

Pure logic: the caller reads the log, attributes each request (:mod:`.attribution`) and supplies
the prompt templates of the versions that answered. Every snapshot is bytes that depend only on
those inputs (rows in log order, no clock, no randomness), so the same inputs rebuild the same
files and a snapshot's digest can be its name. Personal data is scrubbed from every text that came
from a user or the model before it is written (:mod:`.scrub`).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from llmrelease.specs import Feedback, Scorer, TrafficRecord
from llmrelease.tasks.feedback.attribution import Attribution
from llmrelease.tasks.feedback.scrub import scrub, scrub_value

__all__ = ["LoggedRequest", "Snapshot", "Harvest", "build_harvest", "normalise", "snapshot_name"]

Render = Callable[[int, dict[str, str]], list[dict[str, str]] | None]
"""(prompt version, variables) -> the chat messages that version sends, or None when unknown."""


def snapshot_name(kind: str, digest: str, suffix: str) -> str:
    """Content-addressed: the same rows give the same name (the first 16 hex digits of the sha256)."""
    return f"{kind}-{digest[:16]}{suffix}"


@dataclass(frozen=True)
class LoggedRequest:
    record: TrafficRecord
    line: int
    attribution: Attribution


@dataclass(frozen=True)
class Snapshot:
    kind: str
    data: bytes
    suffix: str
    rows: int

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def name(self) -> str:
        return snapshot_name(self.kind, self.digest, self.suffix)


@dataclass
class Harvest:
    snapshots: dict[str, Snapshot]
    card: bytes
    """The regression evalset's card (``<name>.card.yaml`` beside it)."""
    summary: dict[str, Any]
    left_out: dict[str, list[str]] = field(default_factory=dict)

    @property
    def card_name(self) -> str:
        return self.snapshots["regression"].name.removesuffix(".jsonl") + ".card.yaml"


def normalise(text: str) -> str:
    """What makes two requests the same one: case, Unicode forms, spacing and punctuation aside."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def _request_key(rec: TrafficRecord) -> str:
    if rec.vars is not None:
        return json.dumps({k: normalise(v) for k, v in sorted(rec.vars.items())}, ensure_ascii=False)
    return json.dumps([[m.role, normalise(m.content)] for m in rec.messages or []], ensure_ascii=False)


def _row_id(key: str) -> str:
    return "fb-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _answer_text(value: str | dict[str, Any]) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _rating(fb: Feedback) -> int | None:
    """Thumbs on the 1-5 scale (down 1, up 5), to compare answers rated either way."""
    if fb.score is None:
        return None
    return {"down": 1, "up": 5}.get(fb.score, fb.score)  # type: ignore[arg-type]


def _reference(correction: str | dict[str, Any], structured: bool) -> str | dict[str, Any]:
    """A text correction of an app with a response schema is its JSON object when it parses."""
    if structured and isinstance(correction, str):
        try:
            parsed = json.loads(correction)
        except ValueError:
            return correction
        if isinstance(parsed, dict):
            return parsed
    return correction


def _wilson(k: int, n: int) -> list[float] | None:
    if n == 0:
        return None
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    return [round(float(lo), 4), round(float(hi), 4)]


def _scorers_for(references: list[str | dict[str, Any]], scorers: list[Scorer]) -> list[Scorer]:
    """The app's scorers that can score these references: a ``field`` scorer needs the key in every
    JSON reference, a whole-text one needs text references."""
    out: dict[str, Scorer] = {}
    for s in scorers:
        if s.kind not in ("exact_match", "rouge_l") or s.name in out:
            continue
        fits_json = s.field is not None and all(isinstance(r, dict) and s.field in r for r in references)
        fits_text = s.field is None and all(isinstance(r, str) for r in references)
        if fits_json or fits_text:
            out[s.name] = s
    return list(out.values())


def build_harvest(
    app: str,
    requests: list[LoggedRequest],
    *,
    source: str,
    render: Render,
    scorers: list[Scorer],
    structured: bool,
    lines_read: int,
    skipped: list[str] | None = None,
) -> Harvest:
    """The three snapshots and the summary from the app's logged requests (in log order).
    ``skipped``: traces the reader could not use, listed in the summary."""
    left: dict[str, list[str]] = defaultdict(list)
    if skipped:
        left["traces"] = list(skipped)
    with_feedback = [r for r in requests if r.record.feedback is not None]

    # One row per request text: the latest feedback on it wins (a later correction revises an
    # earlier one); the rest are counted as duplicates.
    latest: dict[str, LoggedRequest] = {}
    groups: dict[str, list[LoggedRequest]] = defaultdict(list)
    for r in with_feedback:
        key = _request_key(r.record)
        groups[key].append(r)
        if key not in latest or (r.record.timestamp, r.line) >= (
            latest[key].record.timestamp,
            latest[key].line,
        ):
            latest[key] = r
    kept = sorted(latest.items(), key=lambda kv: (kv[1].record.timestamp, kv[1].line))
    duplicates = len(with_feedback) - len(kept)

    def where(r: LoggedRequest) -> str:
        return f"line {r.line} ({r.record.id})" if r.line else f"trace {r.record.id}"

    def messages_of(r: LoggedRequest, *, note: bool = True) -> list[dict[str, str]] | None:
        """The chat the model saw, from the log or rendered with the served prompt version."""
        if r.record.messages is not None:
            return [{"role": m.role, "content": scrub(m.content)} for m in r.record.messages]
        if not r.attribution.exact:
            if note:
                left["sft"].append(f"{where(r)}: the prompt it saw is unknown ({r.attribution.why})")
            return None
        rendered = render(r.attribution.prompt_version or 0, scrub_value(r.record.vars or {}))
        if rendered is None and note:
            left["sft"].append(f"{where(r)}: prompt v{r.attribution.prompt_version} could not be read")
        return rendered

    def meta(r: LoggedRequest) -> dict[str, str]:
        fb = r.record.feedback
        assert fb is not None
        out = {"request_id": r.record.id or f"line-{r.line}", "served": r.attribution.label}
        if r.record.trace_id:
            out["trace_id"] = r.record.trace_id
        if fb.score is not None:
            out["score"] = str(fb.score)
        if fb.reason:
            out["reason"] = scrub(fb.reason)
        return out

    regression_rows: list[dict[str, Any]] = []
    sft_rows: list[dict[str, Any]] = []
    preference_rows: list[dict[str, Any]] = []
    for key, r in kept:
        fb = r.record.feedback
        assert fb is not None
        output = r.record.champion.output if r.record.champion else None
        row_meta = meta(r)
        if fb.correction is not None or fb.negative:
            if r.record.vars is None:
                left["regression"].append(f"{where(r)}: chat messages without template variables")
            elif fb.correction is None:
                left["regression"].append(f"{where(r)}: negative, but no correction to use as the reference")
            else:
                regression_rows.append(
                    {
                        "id": _row_id(key),
                        "vars": scrub_value(r.record.vars),
                        "reference": scrub_value(_reference(fb.correction, structured)),
                        "tags": ["feedback", *[scrub(t) for t in fb.tags]],
                        "meta": row_meta,
                    }
                )
        answer = fb.correction if fb.correction is not None else (output if fb.positive else None)
        if answer is None:
            continue
        prompt = messages_of(r)
        if prompt is None:
            continue
        good = scrub(_answer_text(answer))
        sft_rows.append(
            {
                "id": _row_id(key),
                "messages": [*prompt, {"role": "assistant", "content": good}],
                "meta": row_meta,
            }
        )
        if fb.correction is not None and output is not None and scrub(output) != good:
            preference_rows.append(
                {
                    "id": _row_id(key),
                    "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": good}],
                    "rejected": [{"role": "assistant", "content": scrub(output)}],
                    "meta": row_meta,
                }
            )
    # Better- vs worse-rated answers to the same request under the same prompt, without corrections.
    corrected = {row["id"] for row in preference_rows}
    for key, members in groups.items():
        if _row_id(key) in corrected:
            continue
        rated = [
            m
            for m in members
            if m.record.feedback is not None
            and _rating(m.record.feedback) is not None
            and m.record.champion is not None
            and m.record.champion.output
        ]
        if len(rated) < 2:
            continue
        rated.sort(key=lambda m: (_rating(m.record.feedback), m.record.timestamp, m.line))  # type: ignore[arg-type]
        worst, best = rated[0], rated[-1]
        assert worst.record.champion and best.record.champion
        good, bad = scrub(best.record.champion.output or ""), scrub(worst.record.champion.output or "")
        if _rating(best.record.feedback) == _rating(worst.record.feedback) or good == bad:  # type: ignore[arg-type]
            continue
        p_best, p_worst = messages_of(best, note=False), messages_of(worst, note=False)
        if p_best is None or p_best != p_worst:
            continue
        preference_rows.append(
            {
                "id": _row_id(key),
                "prompt": p_best,
                "chosen": [{"role": "assistant", "content": good}],
                "rejected": [{"role": "assistant", "content": bad}],
                "meta": meta(best) | {"rejected_served": worst.attribution.label},
            }
        )

    snapshots = {
        "regression": Snapshot("regression", _jsonl(regression_rows), ".jsonl", len(regression_rows)),
        "sft": Snapshot("sft", _jsonl(sft_rows), ".jsonl", len(sft_rows)),
        "preference": Snapshot("preference", _jsonl(preference_rows), ".jsonl", len(preference_rows)),
    }
    references = [row["reference"] for row in regression_rows]
    card_scorers = _scorers_for(references, scorers)
    if regression_rows and not card_scorers:
        left["regression"].append(
            "no scorer of the app's evalset cards can score these corrections: add scorers to the card"
        )
    regression = snapshots["regression"]
    card = {
        "version": f"feedback-{regression.digest[:12]}",
        "description": (
            f"Harvested from production feedback on app '{app}' ({source}): {regression.rows} requests "
            "with a user's correction as the reference. Reviewed by a person before it is committed."
        ),
        "kind": "quality",
        "scorers": [s.model_dump(mode="json", exclude_none=True) for s in card_scorers],
        "harvest": {"digest": regression.digest, "source": source, "rows": regression.rows},
    }
    card_bytes = yaml.safe_dump(card, sort_keys=False, allow_unicode=True, width=100).encode()

    summary = _summary(app, requests, with_feedback, source=source, lines_read=lines_read)
    summary["duplicates_dropped"] = duplicates
    summary["snapshots"] = {
        kind: {"file": s.name, "rows": s.rows, "sha256": s.digest} for kind, s in snapshots.items()
    }
    summary["left_out"] = {k: v for k, v in sorted(left.items())}
    data = (json.dumps(summary, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()
    snapshots["summary"] = Snapshot("summary", data, ".json", len(requests))
    return Harvest(snapshots, card_bytes, summary, dict(left))


def _summary(
    app: str,
    requests: list[LoggedRequest],
    with_feedback: list[LoggedRequest],
    *,
    source: str,
    lines_read: int,
) -> dict[str, Any]:
    per: dict[str, dict[str, Any]] = {}
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    for r in requests:
        label = r.attribution.label
        row = per.setdefault(label, {"served": label, "requests": 0, "feedback": 0, "negative": 0})
        row["requests"] += 1
        fb = r.record.feedback
        if fb is None:
            continue
        row["feedback"] += 1
        row["negative"] += int(fb.negative)
        if fb.negative and fb.reason:
            reasons[label][normalise(scrub(fb.reason))] += 1
    versions = []
    for label, row in sorted(per.items(), key=lambda kv: (kv[0] == "unattributed", kv[0])):
        n, f, neg = row["requests"], row["feedback"], row["negative"]
        row["feedback_rate"] = round(f / n, 4) if n else None
        row["feedback_rate_ci95"] = _wilson(f, n)
        row["negative_share"] = round(neg / f, 4) if f else None
        row["negative_share_ci95"] = _wilson(neg, f)
        row["top_reasons"] = [
            [reason, c] for reason, c in sorted(reasons[label].items(), key=lambda x: (-x[1], x[0]))
        ][:5]
        versions.append(row)
    unattributed = [
        {"line": r.line or None, "id": r.record.id, "why": r.attribution.why}
        for r in with_feedback
        if not r.attribution.exact
    ]
    exact = len(with_feedback) - len(unattributed)
    return {
        "app": app,
        "traffic": source,
        "lines_read": lines_read,
        "requests": len(requests),
        "feedback": len(with_feedback),
        "attributed": {
            "exact": exact,
            "share": round(exact / len(with_feedback), 4) if with_feedback else None,
            "logged": sum(1 for r in with_feedback if r.attribution.how == "logged"),
            "history": sum(1 for r in with_feedback if r.attribution.how == "history"),
        },
        "unattributed": unattributed,
        "per_version": versions,
    }
