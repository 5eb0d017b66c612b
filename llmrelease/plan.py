"""The release plan: every input of a release, read, checked and resolved before anything is registered.

One function builds it; the CLI calls it to fail fast (exit 2 with file, line and field) and the
release flow's first step calls the same function. Nothing later re-reads a spec from disk, and a
bad spec, evalset row, model source, engine argument or traffic line stops the release here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmrelease.manifest import (
    build_manifest,
    dir_digest,
    engine_factory_name,
    is_test_engine,
)
from llmrelease.project import AppSpec, git_commit, load_app
from llmrelease.specs import content_hash, resolve_relative
from llmrelease.tasks.evaluation.evalsets import Evalset, load_evalsets
from llmrelease.tasks.shadow.traffic import TrafficSample, read_traffic

__all__ = ["ReleasePlan", "build_plan"]


@dataclass(frozen=True)
class ReleasePlan:
    """Resolved and immutable: what the release evaluates, against what, with which engine."""

    spec: AppSpec
    evalsets: list[Evalset]
    git_commit: str
    engine_factory: str
    """``vllm``, or the ``module:function`` of ``LLMRELEASE_ENGINE_FACTORY`` (never moves an alias)."""
    weights: dict[str, str | None]
    """Content digests of the model's (and the guard's) weights."""
    manifest: dict[str, Any]
    manifest_digest: str
    traffic: TrafficSample | None = field(default=None, repr=False)

    @property
    def score_parts(self) -> dict[str, dict[str, str]]:
        """Per evalset, the inputs that change its scores (see manifest.score_parts)."""
        return self.manifest["score_parts"]

    @property
    def test_engine(self) -> bool:
        return is_test_engine(self.engine_factory)


def _weights(spec: AppSpec) -> dict[str, str | None]:
    """Check every model source (and engine arguments) and digest the weights they name."""
    from llmrelease.preflight import check_app_sources

    found = check_app_sources(spec)
    out: dict[str, str | None] = {}
    for role, source in (("model", spec.model.source), ("guard", spec.guard.source if spec.guard else None)):
        if source is None:
            continue
        digest = found.get(role)
        if digest is None and source.hf_dir:
            digest = dir_digest(resolve_relative(spec.root, source.hf_dir))
        out[role] = digest
    return out


def build_plan(
    project: Path,
    app: str,
    *,
    prompt_file: Path | None = None,
    model_file: Path | None = None,
    commit: str | None = None,
    with_traffic: bool = True,
) -> ReleasePlan:
    """Load and cross-check the app, check its model sources and engine arguments against the
    engine's own argument names (no engine is started), scan every evalset, sample the traffic
    log, count every prompt's tokens against the engine's context (vLLM, with the model's own
    tokenizer; remembered on disk), and write the manifest. Raises InputError (exit 2) on the first
    bad input."""
    spec = load_app(project, app, prompt_file=prompt_file, model_file=model_file)
    weights = _weights(spec)
    evalsets = load_evalsets(spec)
    traffic = None
    if with_traffic and spec.shadow is not None:
        traffic = read_traffic(
            spec.shadow.traffic, spec.name, project_root=spec.root, variables=spec.prompt.variables
        )
    factory = engine_factory_name()
    if not is_test_engine(factory):  # a test engine is not vLLM: its prompts have no context limit
        from llmrelease.engines.prompt_length import check_prompt_lengths

        check_prompt_lengths(spec, evalsets, traffic)
    manifest = build_manifest(spec, evalsets, engine_factory=factory, weights=weights)
    return ReleasePlan(
        spec=spec,
        evalsets=evalsets,
        git_commit=commit or git_commit(project),
        engine_factory=factory,
        weights=weights,
        manifest=manifest,
        manifest_digest=content_hash(manifest)[:16],
        traffic=traffic,
    )
