"""Which release was champion when: an append-only record the pipeline keeps on the registered model.

MLflow keeps where an alias points now, not where it pointed last Tuesday. Production feedback
arrives days after the answer it is about, and a log line often says only "the champion answered".
To attribute it to an exact model and prompt version, every champion move the pipeline makes or
sees (a promotion, a rollback, a revert, a hand move in the MLflow UI) is written as one tag on the
registered model, ``llmrelease.champion_history.<seq>.<op>.v<version>``, whose value names the
time, the model and the prompt version. A tag is written in one call: an event is either there
whole or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from llmrelease.mlflow_registry import TAG, MlflowRegistry

__all__ = ["ChampionEvent", "PREFIX", "record_champion", "champion_history", "champion_at", "parse_events"]

PREFIX = TAG + "champion_history."


@dataclass(frozen=True)
class ChampionEvent:
    """From ``at`` on, ``version`` (with ``prompt_version``) was champion, until the next event."""

    at: datetime
    seq: int
    """Write order: events are written under the app's lock, so two in the same second (a hand
    move and its revert) keep their order."""
    version: str
    prompt_version: int | None
    op: str
    """``promote``, ``rollback``, ``revert`` (the pipeline's moves) or ``hand_move`` (seen in MLflow)."""


def _time(text: str) -> datetime:
    at = datetime.fromisoformat(text)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def record_champion(
    registry: MlflowRegistry, app: str, version: str, prompt_version: int | None, *, op: str, at: str
) -> None:
    """Append one event, unless the latest one already names the same champion: a move completed
    twice (by its owner and by whoever finishes its intent), or a release's own promotion coming
    back as an alias webhook, is one event. Call it holding the app's lock."""
    events = champion_history(registry, app)
    if events and (events[-1].version, events[-1].prompt_version) == (version, prompt_version):
        return
    seq = max((e.seq for e in events), default=0) + 1
    when = _time(at)
    value = {
        "at": when.isoformat(),
        "seq": seq,
        "version": version,
        "prompt_version": prompt_version,
        "op": op,
    }
    registry.set_model_tag(app, f"{PREFIX}{seq:06d}.{op}.v{version}", json.dumps(value, sort_keys=True))


def parse_events(tags: dict[str, str]) -> list[ChampionEvent]:
    """The events among a registered model's tags in the order they were written; a tag that does
    not parse (edited by hand) is left out rather than guessed at."""
    events = []
    for key, raw in tags.items():
        if not key.startswith(PREFIX):
            continue
        try:
            data = json.loads(raw)
            pv = data.get("prompt_version")
            prompt_version = int(pv) if pv else None
            at, seq = _time(data["at"]), int(data.get("seq", 0))
            events.append(ChampionEvent(at, seq, str(data["version"]), prompt_version, str(data["op"])))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return sorted(events, key=lambda e: (e.seq, e.at))


def champion_history(registry: MlflowRegistry, app: str) -> list[ChampionEvent]:
    return parse_events(registry.model_tags(app) or {})


def champion_at(events: list[ChampionEvent], when: datetime) -> ChampionEvent | None:
    """The event in force at ``when``: the last one written at or before it; None before the first."""
    current = None
    for e in events:  # in write order; a clock that stepped back does not reorder them
        if e.at <= when:
            current = e
    return current
