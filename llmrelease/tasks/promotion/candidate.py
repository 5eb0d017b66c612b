"""The candidate: a model spec and a prompt version registered as one model version, found
again (not re-registered) when its content is unchanged.

Registration is find-or-create under the app's lock (:mod:`llmrelease.locks`): two releases of the
same content at once get one version. Taking the lock first finishes what a killed release left
half-way (:func:`.transaction.recover`). A version that was rolled back is not released again
unless asked for explicitly."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llmrelease.errors import RolledBackRefused
from llmrelease.faults import checkpoint
from llmrelease.locks import app_lock
from llmrelease.manifest import is_test_engine
from llmrelease.mlflow_registry import CHAMPION, TAG, MlflowRegistry, VersionInfo, utc_now
from llmrelease.plan import ReleasePlan
from llmrelease.specs import ModelSpec, PromptSpec, content_hash
from llmrelease.tasks.promotion.transaction import recover

__all__ = ["Candidate", "VersionState", "candidate_key", "register_candidate"]


class VersionState:
    """What a registered version knows of itself when its release starts (a candidate's, a router's)."""

    version: VersionInfo
    champion: VersionInfo | None
    engine_factory: str

    @property
    def test_engine(self) -> bool:
        """Evaluated with a test engine (LLMRELEASE_ENGINE_FACTORY): recorded, never promoted."""
        return is_test_engine(self.engine_factory)

    @property
    def is_champion(self) -> bool:
        return self.champion is not None and self.champion.version == self.version.version


@dataclass(frozen=True)
class Candidate(VersionState):
    app: str
    version: VersionInfo
    created: bool
    prompt_version: int
    prompt_created: bool
    champion: VersionInfo | None
    """The champion when the release started: what the candidate is compared against (compare-and-set)."""
    digests: dict[str, str]
    git_commit: str
    score_parts: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per evalset, what its scores depend on besides model and prompt (manifest.score_parts)."""
    manifest_digest: str = ""
    engine_factory: str = "vllm"
    notes: tuple[str, ...] = ()
    """What registration found and did on the way: an unfinished move completed, dead runs marked,
    a rolled-back version released again on purpose."""



def candidate_key(model: ModelSpec, prompt: PromptSpec, engine_factory: str = "vllm") -> str:
    """The identity of a candidate. A test engine makes another candidate: its verdict is never
    attached to the version a real release of the same specs registers."""
    key = {"model": model.digest(), "prompt": prompt.digest()}
    if is_test_engine(engine_factory):
        key["engine_factory"] = engine_factory
    return content_hash(key)


def _flat(prefix: str, obj: Any, out: dict[str, str]) -> dict[str, str]:
    if isinstance(obj, dict) and obj and prefix not in ("response_schema", "engine.extra"):
        for k, v in obj.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True)
    return out


def register_candidate(
    registry: MlflowRegistry, plan: ReleasePlan, *, allow_rolled_back: bool = False
) -> Candidate:
    """Register (or find) the prompt version and the model version of this candidate.

    Called only with a built plan (every input checked). Moves no alias: ``challenger`` moves when
    the candidate's verdict is recorded (:func:`.record.log_evaluation`)."""
    app = plan.spec.name
    checkpoint("register.waiting_for_lock")
    with app_lock(registry.tracking_uri, app):
        checkpoint("register.locked")
        notes = recover(registry, app)
        return _register(registry, plan, allow_rolled_back=allow_rolled_back, notes=notes)


def _register(
    registry: MlflowRegistry, plan: ReleasePlan, *, allow_rolled_back: bool, notes: list[str]
) -> Candidate:
    spec, evalsets, git_commit = plan.spec, plan.evalsets, plan.git_commit
    app = spec.name
    digests = {ev.name: ev.digest for ev in evalsets}
    key = candidate_key(spec.model, spec.prompt, plan.engine_factory)
    champion = registry.alias(app, CHAMPION)
    existing = registry.find_candidate(app, key)
    tags = {TAG + f"evalset.{name}.digest": d for name, d in digests.items()}
    tags[TAG + "manifest_digest"] = plan.manifest_digest
    rolled_back = existing.tags.get(TAG + "rolled_back_at") if existing else None
    if existing and rolled_back and not (champion and champion.version == existing.version):
        if not allow_rolled_back:
            raise RolledBackRefused(
                f"this candidate (same model spec and prompt) is v{existing.version}, which was rolled "
                f"back at {rolled_back}; releasing it again is refused",
                fix="change the candidate, or pass --allow-rolled-back to release it again on purpose "
                "(recorded on the version and the run)",
            )
        tags[TAG + "rereleased_after_rollback_at"] = utc_now()
        notes.append(
            f"v{existing.version} was rolled back at {rolled_back}; released again (--allow-rolled-back)"
        )
    prompt_version, prompt_created = registry.ensure_prompt_version(
        app,
        spec.prompt.template(),
        content_hash=spec.prompt.digest(),
        commit_message=spec.prompt.description or f"{spec.prompt.version} from {git_commit}",
        tags={TAG + "git_commit": git_commit, TAG + "spec_version": spec.prompt.version},
    )
    checkpoint("register.prompt_registered")
    params = _flat("", spec.model.model_dump(mode="json"), {})
    params["prompt_version"] = str(prompt_version)
    if existing is None:
        tags.update(
            {
                TAG + "git_commit": git_commit,
                TAG + "model_spec_version": spec.model.version,
                TAG + "prompt_spec_version": spec.prompt.version,
                TAG + "model_spec_digest": spec.model.digest(),
                TAG + "engine_factory": plan.engine_factory,
            }
        )
    version, created = registry.ensure_model_version(
        app, candidate_key=key, prompt_version=prompt_version, params=params, tags=tags
    )
    checkpoint("register.model_registered")
    return Candidate(
        app,
        version,
        created,
        prompt_version,
        prompt_created,
        champion,
        digests,
        git_commit,
        plan.score_parts,
        plan.manifest_digest,
        plan.engine_factory,
        tuple(notes),
    )
