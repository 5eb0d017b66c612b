"""A router is registered and promoted like a candidate, in a registered model of its own.

The router's versions live in ``<app>.router`` (one version per distinct policy, quality score and
pair of routes), with the same aliases (challenger, champion, previous-champion) moved by the same
all-or-nothing transaction and compare-and-set as a candidate's (:mod:`..promotion.transaction`),
under the router's own lock. Each route's prompt is a version of the app's prompt (registered under
the app's lock, found again when unchanged), and the router's LoggedModel links to both, so the MLflow
UI shows which prompt versions a router serves. The app's own champion is not touched: what serves
production reads ``models:/<app>.router@champion`` for the routing policy and its threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmrelease.faults import checkpoint
from llmrelease.locks import app_lock
from llmrelease.manifest import is_test_engine
from llmrelease.mlflow_registry import CHAMPION, TAG, MlflowRegistry, VersionInfo, router_name, utc_now
from llmrelease.plan import ReleasePlan
from llmrelease.router_app import RouterApp
from llmrelease.specs import content_hash
from llmrelease.tasks.gates.decisions import GateReport
from llmrelease.tasks.promotion.candidate import VersionState
from llmrelease.tasks.promotion.record import version_verdict
from llmrelease.tasks.promotion.transaction import recover

__all__ = [
    "RouterCandidate",
    "router_key",
    "register_router",
    "record_verdict",
]


@dataclass(frozen=True)
class RouterCandidate(VersionState):
    app: str
    """The registered model of the router (``<app>.router``): what the transaction moves aliases of."""
    version: VersionInfo
    created: bool
    prompt_versions: dict[str, int]
    """Each route's prompt version in the app's prompt registry."""
    champion: VersionInfo | None
    """The router champion when the evaluation started (compare-and-set)."""
    engine_factory: str = "vllm"
    notes: tuple[str, ...] = ()


def router_key(router: RouterApp, engine_factory: str = "vllm") -> str:
    """What makes a router: its policy, its quality score and both routes' model and prompt content.
    Gates, statistics and labels are not part of it (changing a gate re-judges the same router)."""
    key: dict[str, object] = {
        "policy": router.spec.policy.model_dump(mode="json"),
        "quality": router.spec.quality,
        "routes": [
            {"name": r.name, "model": r.app.model.digest(), "prompt": r.app.prompt.digest()}
            for r in router.routes
        ],
    }
    if is_test_engine(engine_factory):
        key["engine_factory"] = engine_factory
    return content_hash(key)


def register_router(
    registry: MlflowRegistry, router: RouterApp, plans: dict[str, ReleasePlan]
) -> RouterCandidate:
    """Register (or find) each route's prompt version and the router's version. Moves no alias."""
    app = router.app.name
    engine_factory = next(iter(plans.values())).engine_factory
    commit = next(iter(plans.values())).git_commit
    prompt_versions: dict[str, int] = {}
    with app_lock(registry.tracking_uri, app):  # the app's prompt registry: the app's lock
        for r in router.routes:
            prompt = r.app.prompt
            prompt_versions[r.name], _ = registry.ensure_prompt_version(
                app,
                prompt.template(),
                content_hash=prompt.digest(),
                commit_message=prompt.description or f"{prompt.version} from {commit}",
                tags={TAG + "git_commit": commit, TAG + "spec_version": prompt.version},
            )
    checkpoint("router.prompts_registered")
    name = router_name(app)
    with app_lock(registry.tracking_uri, name):
        notes = recover(registry, name)
        champion = registry.alias(name, CHAMPION)
        params = {
            "quality": router.spec.quality,
            **{f"policy.{k}": str(v) for k, v in router.spec.policy.model_dump(mode="json").items()},
        }
        for r in router.routes:
            params[f"route.{r.name}.prompt_version"] = str(prompt_versions[r.name])
            params[f"route.{r.name}.prompt_spec_version"] = r.app.prompt.version
            params[f"route.{r.name}.model_spec_version"] = r.app.model.version
            params[f"route.{r.name}.model_spec_digest"] = r.app.model.digest()
        tags = {
            TAG + "kind": "router",
            TAG + "router_spec_version": router.spec.version,
            TAG + "routes": ",".join(r.name for r in router.routes),
            TAG + "git_commit": commit,
            TAG + "engine_factory": engine_factory,
        }
        version, created = registry.ensure_router_version(
            name,
            app=app,
            router_key=router_key(router, engine_factory),
            prompt_versions=list(prompt_versions.values()),
            params=params,
            tags=tags,
        )
    checkpoint("router.registered")
    return RouterCandidate(name, version, created, prompt_versions, champion, engine_factory, tuple(notes))


def record_verdict(
    registry: MlflowRegistry,
    candidate: RouterCandidate,
    report: GateReport,
    run_id: str,
    threshold: float,
    target_share: float,
) -> None:
    """The verdict, the run and the fitted threshold on the version, and ``challenger`` on it (a test
    engine's verdict moves nothing): what serving reads to route is on the version itself."""
    registry.set_version_tags(
        candidate.app,
        candidate.version.version,
        {
            TAG + "router.threshold": repr(float(threshold)),
            TAG + "router.target_share": repr(float(target_share)),
            TAG + "eval_run_id": run_id,
            # the candidate's vocabulary: the on-alias check classifies a router champion by it
            TAG + "verdict": version_verdict(candidate, report),
            TAG + "gates_passed": str(report.passed).lower(),
            TAG + "decision": report.decision,
            TAG + "evaluated_at": utc_now(),
        },
    )
    if not candidate.test_engine:
        registry.set_challenger(candidate.app, candidate.version)
