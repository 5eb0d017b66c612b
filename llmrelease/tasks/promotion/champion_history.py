"""Which release was champion when: an append-only record the pipeline keeps on the registered model.

MLflow keeps where an alias points now, not where it pointed last Tuesday. Production feedback
arrives days after the answer it is about, and a log line often says only "the champion answered".
To attribute it to an exact model and prompt version, every champion move the pipeline makes or
sees (a promotion, a rollback, a revert, a hand move in the MLflow UI) is written as one tag on the
registered model, ``llmrelease.champion_history.<time>.<op>.v<version>``, whose value names the
model and prompt version. Tags are used because they are written in the same call as nothing else:
an event is either there whole or not at all, and a move completed twice (by its owner and by
whoever finishes its intent) writes the same key twice.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from llmrelease.mlflow_registry import TAG, MlflowRegistry

__all__ = ["ChampionEvent", "PREFIX", "record_champion", "champion_history", "champion_at", "parse_events"]

PREFIX = TAG + "champion_history."


@dataclass(frozen=True, order=True)
class ChampionEvent:
    """From ``at`` on, ``version`` (with ``prompt_version``) was champion, until the next event."""

    at: datetime
    version: str
    prompt_version: int | None
    op: str
    """``promote``, ``rollback``, ``revert`` (the pipeline's moves) or ``hand_move`` (seen in MLflow)."""


def _key(at: datetime, op: str, version: str) -> str:
    return f"{PREFIX}{at.strftime('%Y%m%dT%H%M%SZ')}.{op}.v{version}"


def _time(text: str) -> datetime:
    at = datetime.fromisoformat(text)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def record_champion(
    registry: MlflowRegistry, app: str, version: str, prompt_version: int | None, *, op: str, at: str
) -> None:
    """Append one event, unless the last event before it already names the same champion (a
    release's own promotion comes back as an alias webhook: one move, one event)."""
    when = _time(at)
    events = champion_history(registry, app)
    before = [e for e in events if e.at <= when]
    if before and (before[-1].version, before[-1].prompt_version) == (version, prompt_version):
        return
    value = {"at": when.isoformat(), "version": version, "prompt_version": prompt_version, "op": op}
    registry.set_model_tag(app, _key(when, op, version), json.dumps(value, sort_keys=True))


def parse_events(tags: dict[str, str]) -> list[ChampionEvent]:
    """The events among a registered model's tags, oldest first; a tag that does not parse (edited by
    hand) is left out rather than guessed at."""
    events = []
    for key, raw in tags.items():
        if not key.startswith(PREFIX):
            continue
        try:
            data = json.loads(raw)
            pv = data.get("prompt_version")
            at, version, op = _time(data["at"]), str(data["version"]), str(data["op"])
            events.append(ChampionEvent(at, version, int(pv) if pv else None, op))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return sorted(events)


def champion_history(registry: MlflowRegistry, app: str) -> list[ChampionEvent]:
    return parse_events(registry.model_tags(app) or {})


def champion_at(events: list[ChampionEvent], when: datetime) -> ChampionEvent | None:
    """The event in force at ``when`` (the last one at or before it); None before the first."""
    i = bisect.bisect_right([e.at for e in events], when)
    return events[i - 1] if i else None
