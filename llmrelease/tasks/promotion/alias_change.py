"""What to make of a champion alias that moved: a rollout of a gated version, or a manual override.

The release pipeline moves ``champion`` only after every gate passed; a person can still move it in
the MLflow UI. Neither is silently accepted: a version whose gates passed gets its rollout recorded,
anything else is recorded as an override and flagged on the version and on the registered model,
where ``llmrelease status`` and the MLflow UI show it. MLflow's alias webhooks do not say who moved
the alias; a person can sign an override with the ``llmrelease.override_by`` and
``llmrelease.override_reason`` version tags, which the record then carries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from llmrelease.locks import app_lock
from llmrelease.manifest import TEST_ENGINE_VERDICT
from llmrelease.mlflow_registry import CHAMPION, TAG, MlflowRegistry, VersionInfo, utc_now
from llmrelease.tasks.promotion.champion_history import record_champion
from llmrelease.tasks.promotion.pages import note_on_version
from llmrelease.tasks.promotion.transaction import revert_champion, set_expected_champion

__all__ = ["AliasRecord", "classify", "record_alias_change"]

Kind = Literal["rollout", "override", "reverted", "ignored", "superseded"]
Policy = Literal["flag", "revert"]


@dataclass
class AliasRecord:
    app: str
    alias: str
    version: str
    kind: Kind
    reason: str
    at: str
    verdict: str | None = None
    release_run: str | None = None
    moved_by: str | None = None
    record_run: str | None = None
    prompt_alias_synced: bool = False
    policy: Policy = "flag"
    signed: bool = False
    """The version carries both override tags: a person signed the move with a reason."""
    restored: str | None = None
    """With ``manual_champion: revert``: the version champion was moved back to."""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def classify(tags: dict[str, str]) -> tuple[Kind, str]:
    """Rollout only for a version with a release run whose gates all passed; the rest fail closed."""
    verdict, run = tags.get(TAG + "verdict"), tags.get(TAG + "eval_run_id")
    if verdict == "passed" and run:
        return "rollout", f"gates passed in release run {run}"
    if verdict == "failed":
        return "override", f"its gates FAILED in release run {run}"
    if verdict == "inconclusive":
        return "override", f"its gates were INCONCLUSIVE in release run {run} (too few items to tell)"
    if verdict == TEST_ENGINE_VERDICT:
        factory = tags.get(TAG + "engine_factory", "?")
        return "override", f"it was evaluated with a test engine ({factory}), not the model, in run {run}"
    return "override", "it was never evaluated by llmrelease (no release run, no gate verdict)"


def record_alias_change(
    registry: MlflowRegistry,
    app: str,
    alias: str,
    version: str,
    *,
    delivery: str | None = None,
    policy: Policy = "flag",
) -> AliasRecord:
    """Check the champion ``app`` now has against its gates and record what it is; with the
    ``revert`` policy, move an unsigned override back (compare-and-set)."""
    at, version = utc_now(), str(version)
    if alias != CHAMPION:
        return AliasRecord(app, alias, version, "ignored", f"only '{CHAMPION}' moves are checked", at)
    model_tags = registry.model_tags(app)
    if model_tags is None or TAG + "app" not in model_tags:
        return AliasRecord(app, alias, version, "ignored", "not a registered model of an llmrelease app", at)
    current = registry.alias(app, CHAMPION)
    if current is None or current.version != version:
        now = f"v{current.version}" if current else "unset"
        return AliasRecord(
            app,
            alias,
            version,
            "superseded",
            f"the champion is {now} by now; that move is recorded on its own",
            at,
        )
    kind, reason = classify(current.tags)
    record = AliasRecord(
        app,
        alias,
        version,
        kind,
        reason,
        at,
        verdict=current.tags.get(TAG + "verdict"),
        release_run=current.eval_run_id,
        moved_by=_moved_by(current),
        policy=policy,
        signed=_signed(current),
    )
    with app_lock(registry.tracking_uri, app):  # never between a release's compare and its moves
        record.prompt_alias_synced = registry.sync_prompt_alias(app, CHAMPION, current)
        # What served from now on, whatever the policy decides next (a revert is its own event).
        record_champion(registry, app, version, current.prompt_version, op="hand_move", at=at)
    if record.prompt_alias_synced:
        record.notes.append(f"prompt alias '{CHAMPION}' moved to prompt v{current.prompt_version} to match")
    if kind == "override" and policy == "revert" and not record.signed:
        restored, what = revert_champion(registry, app, version, reason=reason)
        record.notes.append(what)
        if restored is not None:
            record.kind, record.restored = "reverted", restored.version
    elif kind == "rollout" or record.signed:  # accepted: a later hand move is reverted to this one
        set_expected_champion(registry, app, version)
    _write(registry, record, delivery)
    return record


def _signed(version: VersionInfo) -> bool:
    return bool(version.tags.get(TAG + "override_by") and version.tags.get(TAG + "override_reason"))


def _moved_by(version: VersionInfo) -> str:
    who = version.tags.get(TAG + "override_by")
    why = version.tags.get(TAG + "override_reason")
    if who or why:
        return f"{who or 'unknown'} ({why or 'no reason given'})"
    return "unknown: MLflow alias webhooks do not carry the user"


def _write(registry: MlflowRegistry, record: AliasRecord, delivery: str | None) -> None:
    app, version = record.app, record.version
    if record.kind == "rollout":
        title = f"Rollout: v{version} became champion ({record.reason})."
    elif record.kind == "reverted":
        title = (
            f"REVERTED: v{version} was made champion by hand although {record.reason}; "
            f"champion moved back to v{record.restored} (manual_champion: revert, no signed override)."
        )
    else:
        title = (
            f"MANUAL OVERRIDE: v{version} was made champion although {record.reason}. "
            f"Moved by: {record.moved_by}. Check it, or roll back with `llmrelease rollback {app}`."
        )
    record.record_run = registry.log_record(
        app,
        run_name=f"{app}-{record.kind}-v{version}",
        tags={
            TAG + "kind": record.kind,
            TAG + "model_version": version,
            TAG + "verdict": record.verdict or "none",
            "mlflow.note.content": title,
        },
        params={"alias": record.alias, "version": version, "delivery": delivery or "none"},
        record=record.to_dict(),
        path=f"{record.kind}.json",
    )
    run = f"record run `{record.record_run}`"
    if record.kind == "rollout":
        registry.set_version_tags(
            app, version, {TAG + "rollout_at": record.at, TAG + "rollout_run": record.record_run}
        )
        registry.set_model_tag(app, TAG + "champion_override", "none")
        _page(registry, record, version, f"became champion by a move in the registry: rollout ({run})")
    elif record.kind == "reverted":
        registry.set_version_tags(app, version, {TAG + "revert_run": record.record_run or ""})
        _page(registry, record, version, f"**REVERTED**: made champion by hand although {record.reason}; "
              f"champion moved back to v{record.restored} ({run})")  # fmt: skip
        if record.restored:
            line = f"champion again: the hand move to v{version} was reverted"
            _page(registry, record, record.restored, line)
    else:
        flag = f"{record.at}: champion set to v{version} although {record.reason}"
        registry.set_version_tags(
            app, version, {TAG + "override": flag, TAG + "override_run": record.record_run}
        )
        registry.set_model_tag(app, TAG + "champion_override", flag)
        signed = "signed override" if record.signed else "MANUAL OVERRIDE (flagged)"
        _page(registry, record, version, f"**{signed}**: made champion although {record.reason}; "
              f"moved by {record.moved_by} ({run})")  # fmt: skip


def _page(registry: MlflowRegistry, record: AliasRecord, version: str, line: str) -> None:
    if failed := note_on_version(registry, record.app, version, line):
        record.notes.append(failed)
