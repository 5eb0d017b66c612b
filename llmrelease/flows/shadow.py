"""The shadow flow on its own: the champion against any registered version, on recorded traffic.

Nothing moves: it records a run with the comparison, the shadow gates' verdicts and the HTML
report, so a person can look before (or instead of) releasing.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.utilities.annotations import quote

from llmrelease.errors import InputError, UnknownNameError
from llmrelease.mlflow_registry import CHALLENGER, CHAMPION, TAG, MlflowRegistry, VersionInfo
from llmrelease.store import redact_uri, resolve_store
from llmrelease.tasks.evaluation.items import records_table
from llmrelease.tasks.gates.decisions import evaluate_gates
from llmrelease.tasks.prefect_tasks import load_app_task, load_traffic_task, shadow_replay_task
from llmrelease.tasks.release import version_side
from llmrelease.tasks.shadow.replay import Side, shadow_summary

__all__ = ["shadow", "shadow_flow"]


def _version(registry: MlflowRegistry, app: str, wanted: str | None, alias: str) -> VersionInfo:
    if wanted is None:
        info = registry.alias(app, alias)
        if info is None:
            raise InputError(
                f"app '{app}' has no {alias}",
                fix="release a candidate first, or name the versions with --version/--against",
            )
        return info
    versions = {v.version: v for v in registry.versions(app)}
    if wanted not in versions:
        raise UnknownNameError(f"version of '{app}'", wanted, list(versions))
    return versions[wanted]


def _side(registry: MlflowRegistry, name: str, info: VersionInfo) -> Side:
    side = version_side(registry, name, info)
    if side is None:
        raise InputError(
            f"v{info.version} has no llmrelease evaluation run: its specs are unknown",
            fix="release it through llmrelease first",
        )
    return side


def shadow(
    app: str,
    *,
    project: Path,
    candidate_version: str | None = None,
    champion_version: str | None = None,
    tracking_uri: str | None = None,
    artifact_root: str | None = None,
) -> dict[str, Any]:
    spec, _ = load_app_task(project, app, None, None, None)
    if spec.shadow is None:
        raise InputError(
            f"app '{app}' has no shadow spec",
            file=spec.root / "registry" / app / "shadow.yaml",
            fix="create it (see README: 'Shadow comparison')",
        )
    sample = quote(load_traffic_task(spec))
    store = resolve_store(spec.root, tracking_uri)
    registry = MlflowRegistry(store.tracking_uri, artifact_root=artifact_root or store.artifact_root)
    champ = _version(registry, app, champion_version, CHAMPION)
    cand = _version(registry, app, candidate_version, CHALLENGER)
    result = shadow_replay_task(
        spec, _side(registry, "champion", champ), _side(registry, "candidate", cand), sample
    )

    # The policy's shadow gates (absolute rules on shadow.* metrics) decide; nothing moves either way.
    shadow_gates = [g for g in spec.gates.gates if spec.catalogue[g.metric].producer == "shadow"]
    report = None
    if shadow_gates:
        policy = spec.gates.model_copy(update={"gates": shadow_gates})
        report = evaluate_gates(
            policy, result.metrics, {}, {}, catalogue=spec.catalogue, champion_version=champ.version
        )
    gates = [asdict(r) for r in report.results] if report else []
    summary = shadow_summary(result)
    title = f"{app}: shadow v{cand.version} vs v{champ.version}"
    run_id = registry.log_evaluation(
        app,
        run_name=f"{app}-shadow-v{cand.version}-vs-v{champ.version}",
        params={
            "app": app,
            "kind": "shadow",
            "candidate_version": cand.version,
            "champion_version": champ.version,
            "shadow_spec": spec.shadow.version,
            "traffic_source": spec.shadow.traffic.source,
        },
        metrics={**result.metrics, "gates.passed": float(report.passed if report else 1.0)},
        tags={
            TAG + "kind": "shadow",
            TAG + "candidate_version": cand.version,
            TAG + "champion_version": champ.version,
        },
        tables={"shadow/requests.json": records_table(result.rows)},
        artifacts={
            "shadow/report.html": result.html(
                title, gates, currency=(spec.model.pricing.currency if spec.model.pricing else "USD")
            ),
            "shadow/summary.json": summary,
        },
        datasets=[],
    )
    passed = report.passed if report else True
    return {
        "app": app,
        "candidate_version": cand.version,
        "champion_version": champ.version,
        "passed": passed,
        "exit_code": 0 if passed else 1,
        "report": report.to_dict() if report else None,
        "shadow": summary,
        "metrics": result.metrics,
        "run_id": run_id,
        "tracking_uri": redact_uri(registry.tracking_uri),
    }


@flow(name="shadow", validate_parameters=True)
def shadow_flow(
    app: str,
    project_dir: str = ".",
    candidate_version: str | None = None,
    champion_version: str | None = None,
    tracking_uri: str | None = None,
    artifact_root: str | None = None,
) -> dict[str, Any]:
    """Replay recorded production traffic through the champion and a registered version (default:
    the challenger), compare latency, cost and outputs, apply the shadow gates; moves no alias."""
    return shadow(
        app,
        project=Path(project_dir).resolve(),
        candidate_version=candidate_version,
        champion_version=champion_version,
        tracking_uri=tracking_uri,
        artifact_root=artifact_root,
    )
