"""Alias moves that cannot stop half-way: one intent, written first, completed by whoever finds it.

MLflow moves one alias per call and the prompt's aliases live apart from the model's. A promotion
moves four (previous-champion and champion, model and prompt) and tags the version; a process
killed between two calls would leave the model and the prompt disagreeing. So, holding the app's
lock (:mod:`llmrelease.locks`):

1. the champion is compared with the one the candidate was evaluated against (compare-and-set);
2. an *intent* (the aliases' end state, the tags, the run, the owner) is written on the registered
   model;
3. each alias is moved and read back, the tags are written;
4. the intent is removed.

Whoever takes the lock next (a release, a rollback, ``llmrelease status``) and finds an intent
finishes it first: it was written only after the compare-and-set passed, so completing it is what
its owner had decided. Every step is idempotent; completing twice is harmless.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from llmrelease.errors import InputError, PromotionConflict
from llmrelease.faults import checkpoint
from llmrelease.locks import app_lock
from llmrelease.mlflow_registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    TAG,
    MlflowRegistry,
    VersionInfo,
    utc_now,
)
from llmrelease.store import redact_uri
from llmrelease.tasks.promotion.champion_history import record_champion
from llmrelease.tasks.promotion.pages import note_on_version

__all__ = [
    "Intent",
    "Pointer",
    "finish_unfinished",
    "promote_version",
    "rollback",
    "recover",
    "revert_champion",
    "expected_champion",
    "set_expected_champion",
]

EXPECTED = TAG + "champion_expected"
"""Registered-model tag: the champion as the pipeline last set or accepted it (a promotion, a
rollback, a rollout or signed override of a hand move). A hand move is reverted to it."""


@dataclass(frozen=True)
class Pointer:
    """Where an alias points: a model version and the prompt version it was registered with."""

    version: str
    prompt_version: int | None

    @classmethod
    def of(cls, info: VersionInfo | None) -> Pointer | None:
        return cls(info.version, info.prompt_version) if info is not None else None


@dataclass
class Intent:
    op: Literal["promote", "rollback", "revert"]
    app: str
    champion: Pointer
    previous: Pointer | None
    champion_before: Pointer | None
    previous_before: Pointer | None = None
    clear_challenger: str | None = None
    """Remove ``challenger`` only if it still points at this version (a concurrent release's
    challenger is not ours to remove)."""
    version_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    run_id: str | None = None
    started_at: str = ""
    owner: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Intent:
        def ptr(v: dict[str, Any] | None) -> Pointer | None:
            return Pointer(str(v["version"]), v.get("prompt_version")) if v else None

        return cls(
            op=data["op"],
            app=data["app"],
            champion=ptr(data["champion"]),  # type: ignore[arg-type]
            previous=ptr(data.get("previous")),
            champion_before=ptr(data.get("champion_before")),
            previous_before=ptr(data.get("previous_before")),
            clear_challenger=data.get("clear_challenger"),
            version_tags=data.get("version_tags") or {},
            run_id=data.get("run_id"),
            started_at=data.get("started_at", ""),
            owner=data.get("owner", ""),
        )

    def describe(self) -> str:
        before = f"v{self.champion_before.version}" if self.champion_before else "none"
        what = {"promote": "promotion of", "rollback": "rollback to", "revert": "revert to"}[self.op]
        return f"{what} v{self.champion.version} (champion before: {before}), started {self.started_at}"


def _point(registry: MlflowRegistry, app: str, alias: str, target: Pointer | None, step: str) -> None:
    registry.set_model_alias(app, alias, target.version if target else None)
    checkpoint(f"{step}_model_moved")
    # A version registered without a prompt version leaves the prompt alias where it is.
    if target is None or target.prompt_version is not None:
        registry.set_prompt_alias(app, alias, target.prompt_version if target else None)
    checkpoint(f"{step}_prompt_moved")


def _apply(registry: MlflowRegistry, intent: Intent) -> None:
    """Bring the registry to the intent's end state (idempotent), then remove the intent."""
    app = intent.app
    _point(registry, app, PREVIOUS, intent.previous, "promote.previous")
    _point(registry, app, CHAMPION, intent.champion, "promote.champion")
    if intent.clear_challenger is not None:
        challenger = registry.alias(app, CHALLENGER)
        if challenger is not None and challenger.version == intent.clear_challenger:
            registry.set_model_alias(app, CHALLENGER, None)
            registry.set_prompt_alias(app, CHALLENGER, None)
    checkpoint("promote.challenger_cleared")
    for version, tags in intent.version_tags.items():
        registry.set_version_tags(app, version, tags)
    checkpoint("promote.tagged")
    set_expected_champion(registry, app, intent.champion.version)
    record_champion(
        registry, app, intent.champion.version, intent.champion.prompt_version,
        op=intent.op, at=intent.started_at or utc_now(),
    )  # fmt: skip
    registry.clear_intent(app)
    checkpoint("promote.done")


def _moved_by_someone_else(registry: MlflowRegistry, intent: Intent) -> str | None:
    """Which alias holds neither its value from before the move nor its target: someone (a person
    in the MLflow UI) moved it after the move stopped. None when the move can be completed."""
    for alias, before, target in (
        (CHAMPION, intent.champion_before, intent.champion),
        (PREVIOUS, intent.previous_before, intent.previous),
    ):
        model = registry.alias(intent.app, alias)
        allowed = {p.version if p else None for p in (before, target)}
        if (model.version if model else None) not in allowed:
            return f"'{alias}' is on v{model.version if model else '-'}"
    return None


def finish_unfinished(registry: MlflowRegistry, app: str) -> str | None:
    """Complete an alias move a dead process left half-way; call it holding the app's lock.

    Completed unless someone moved an alias it touches after it stopped (a person's later decision
    wins over a dead process's earlier one): then it is dropped, and the prompt aliases are brought
    in line with the model's. Returns a note saying what was done, or None."""
    raw = registry.read_intent(app)
    if raw is None:
        return None
    intent = Intent.from_dict(raw)
    by = intent.owner or "an unknown process"
    moved = _moved_by_someone_else(registry, intent)
    if moved:
        for alias in (CHAMPION, PREVIOUS):
            holder = registry.alias(app, alias)
            if holder is not None:
                registry.sync_prompt_alias(app, alias, holder)
        registry.clear_intent(app)
        return f"dropped an unfinished {intent.describe()} by {by}: {moved} since, set by someone else"
    _apply(registry, intent)
    return f"completed an unfinished {intent.describe()} by {by}"


def recover(registry: MlflowRegistry, app: str) -> list[str]:
    """What a release does first, holding the lock: finish a half-done alias move and mark the runs
    of dead processes KILLED. Returns notes for the outcome."""
    if registry.model_tags(app) is None:
        return []  # nothing registered yet
    notes = []
    done = finish_unfinished(registry, app)
    if done:
        notes.append(done)
    killed = registry.mark_killed_runs(app)
    if killed:
        notes.append(f"marked {len(killed)} run(s) of dead releases KILLED: {', '.join(killed)}")
    return notes


def promote_version(
    registry: MlflowRegistry,
    app: str,
    candidate: VersionInfo,
    *,
    expected_champion: str | None,
    run_id: str,
) -> tuple[bool, list[str]]:
    """champion <- ``candidate``, previous-champion <- the old champion (model and prompt), all or
    nothing, if the champion is still ``expected_champion``; PromotionConflict otherwise.

    Returns whether this call moved the aliases (False: the candidate already was champion), and
    notes (an unfinished move completed first)."""
    from llmrelease.runtime import process_owner

    checkpoint("promote.waiting_for_lock")
    with app_lock(registry.tracking_uri, app):
        checkpoint("promote.locked")
        notes = [n for n in [finish_unfinished(registry, app)] if n]
        current = registry.alias(app, CHAMPION)
        current_version = current.version if current else None
        if current_version == candidate.version:  # a concurrent release of the same candidate won
            return False, [*notes, f"v{candidate.version} was made champion meanwhile by another release"]
        if current_version != expected_champion:
            raise PromotionConflict(
                f"champion of '{app}' moved from {expected_champion or 'none'} to "
                f"{current_version or 'none'} while the candidate was evaluated; not promoting. Re-run "
                "the release to compare against the new champion."
            )
        intent = Intent(
            "promote",
            app,
            champion=Pointer(candidate.version, candidate.prompt_version),
            previous=Pointer.of(current),
            champion_before=Pointer.of(current),
            previous_before=Pointer.of(registry.alias(app, PREVIOUS)),
            clear_challenger=candidate.version,
            version_tags={
                candidate.version: {TAG + "promoted_at": utc_now(), TAG + "promoted_by_run": run_id}
            },
            run_id=run_id,
            started_at=utc_now(),
            owner=process_owner(),
        )
        registry.write_intent(app, intent.to_dict())
        checkpoint("promote.intent_written")
        _apply(registry, intent)
    return True, notes


def rollback(registry: MlflowRegistry, app: str) -> tuple[VersionInfo, VersionInfo, list[str]]:
    """champion <- previous-champion; previous-champion cleared; all or nothing.
    Returns (restored, demoted, notes)."""
    from llmrelease.runtime import process_owner

    if registry.model_tags(app) is None:
        raise InputError(
            f"app '{app}' has nothing registered in {redact_uri(registry.tracking_uri)}: nothing to roll back"
        )
    with app_lock(registry.tracking_uri, app):
        notes = [n for n in [finish_unfinished(registry, app)] if n]
        champion = registry.alias(app, CHAMPION)
        previous = registry.alias(app, PREVIOUS)
        if champion is None:
            raise InputError(f"app '{app}' has no champion to roll back")
        if previous is None:
            raise InputError(
                f"app '{app}' has no previous-champion; nothing to roll back to",
                fix="release an earlier candidate instead, or set the alias in the MLflow UI",
            )
        now = utc_now()
        intent = Intent(
            "rollback",
            app,
            champion=Pointer(previous.version, previous.prompt_version),
            previous=None,
            champion_before=Pointer.of(champion),
            previous_before=Pointer.of(previous),
            version_tags={
                champion.version: {TAG + "rolled_back_at": now},
                previous.version: {TAG + "restored_at": now},
            },
            started_at=now,
            owner=process_owner(),
        )
        registry.write_intent(app, intent.to_dict())
        _apply(registry, intent)
    for version, line in (
        (champion.version, f"**rolled back**: champion is v{previous.version} again"),
        (previous.version, f"restored as champion by a rollback from v{champion.version}"),
    ):
        if failed := note_on_version(registry, app, version, line):
            notes.append(failed)
    return previous, champion, notes


def set_expected_champion(registry: MlflowRegistry, app: str, version: str) -> None:
    registry.set_model_tag(app, EXPECTED, version)


def expected_champion(registry: MlflowRegistry, app: str, *, not_version: str) -> VersionInfo | None:
    """The champion the pipeline last set or accepted, other than ``not_version`` (the version a
    person just moved it to). Stores from before the tag existed: the version promoted, restored
    or rolled out last, by the time its tag records."""
    versions = {v.version: v for v in registry.versions(app)}
    tagged = (registry.model_tags(app) or {}).get(EXPECTED)
    if tagged and tagged != not_version and tagged in versions:
        return versions[tagged]
    stamps = [
        (at, v.version)
        for v in versions.values()
        if v.version != not_version
        for key in ("promoted_at", "restored_at", "rollout_at")
        if (at := v.tags.get(TAG + key))
    ]
    return versions[max(stamps)[1]] if stamps else None


def revert_champion(
    registry: MlflowRegistry, app: str, moved: str, *, reason: str, record_run: str | None = None
) -> tuple[VersionInfo | None, str]:
    """champion (model and prompt) <- the expected champion, if ``champion`` is still ``moved``
    (compare-and-set: a later move, by a person or a release, is not undone). All or nothing, like
    a promotion. Returns (the version restored or None, what happened)."""
    from llmrelease.runtime import process_owner

    with app_lock(registry.tracking_uri, app):
        unfinished = finish_unfinished(registry, app)
        current = registry.alias(app, CHAMPION)
        if current is None or current.version != moved:
            now = f"v{current.version}" if current else "unset"
            return None, f"not reverted: champion is {now} by now, not v{moved}"
        target = expected_champion(registry, app, not_version=moved)
        if target is None:
            return None, f"not reverted: no champion before v{moved} to go back to (flagged only)"
        now = utc_now()
        intent = Intent(
            "revert",
            app,
            champion=Pointer(target.version, target.prompt_version),
            previous=Pointer.of(registry.alias(app, PREVIOUS)),
            champion_before=Pointer.of(current),
            previous_before=Pointer.of(registry.alias(app, PREVIOUS)),
            version_tags={
                moved: {TAG + "reverted_at": now, TAG + "reverted_because": reason[:4900]}
                | ({TAG + "revert_run": record_run} if record_run else {}),
            },
            started_at=now,
            owner=process_owner(),
        )
        registry.write_intent(app, intent.to_dict())
        _apply(registry, intent)
    done = f"champion moved back from v{moved} to v{target.version}"
    return target, done + (f" ({unfinished})" if unfinished else "")
