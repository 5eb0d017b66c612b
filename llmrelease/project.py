"""A project directory: ``registry/<app>/`` specs and ``evalsets/<app>/`` data, loaded and cross-checked.

Everything here is read and validated before anything is registered, so bad input never leaves a
half-registered version behind.
"""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llmrelease.catalogue import RESERVED_NAMESPACES, MetricCatalogue, MetricCollision, app_catalogue
from llmrelease.engines.backends import ENGINE_BACKENDS
from llmrelease.errors import SpecError, UnknownNameError
from llmrelease.specfile import _node_for, load_spec
from llmrelease.specs import EvalsetCard, GatePolicy, GuardSpec, ModelSpec, PromptSpec, ShadowSpec

__all__ = ["AppSpec", "EvalsetRef", "list_apps", "load_app", "git_commit"]

PROMPT_FILE, MODEL_FILE, GATES_FILE = "prompt.yaml", "model.yaml", "gates.yaml"
GUARD_FILE = "guard.yaml"
"""Optional: the app's safety classifier (see GuardSpec)."""
_EVALSET_NAME = re.compile(r"[A-Za-z0-9_-]+")
SHADOW_FILE = "shadow.yaml"
"""Optional: replay production traffic through champion and candidate (see ShadowSpec)."""


@dataclass(frozen=True)
class EvalsetRef:
    """An evalset file and its card; rows are read later, streaming, by the evalsets task."""

    name: str
    path: Path
    card: EvalsetCard
    card_path: Path


@dataclass(frozen=True)
class AppSpec:
    name: str
    root: Path
    prompt: PromptSpec
    prompt_path: Path
    model: ModelSpec
    model_path: Path
    gates: GatePolicy
    gates_path: Path
    evalsets: list[EvalsetRef] = field(default_factory=list)
    guard: GuardSpec | None = None
    guard_path: Path | None = None
    shadow: ShadowSpec | None = None
    shadow_path: Path | None = None

    @functools.cached_property
    def catalogue(self) -> MetricCatalogue:
        """Every metric this app's release produces, with its direction and kind (see catalogue.py)."""
        return app_catalogue(self)

    def has_item_scores(self, metric: str) -> bool:
        """Whether the catalogue declares per-item scores for ``metric`` (shadow metrics are aggregates)."""
        return self.catalogue.per_item(metric)

    @property
    def metric_names(self) -> list[str]:
        """Every metric a gate may name: scorers, structured-output rates, guard rates, shadow aggregates."""
        return list(self.catalogue)


def list_apps(root: Path) -> list[str]:
    reg = root / "registry"
    if not reg.is_dir():
        return []
    return sorted(p.name for p in reg.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _line(path: Path, loc: tuple[object, ...]) -> int | None:
    try:
        node = _node_for(yaml.compose(path.read_text(encoding="utf-8")), loc)
    except (OSError, yaml.YAMLError):
        return None
    return node.start_mark.line + 1 if node is not None else None


def load_app(
    root: Path, app: str, *, prompt_file: Path | None = None, model_file: Path | None = None
) -> AppSpec:
    """Load and cross-check one app. ``prompt_file``/``model_file`` release an alternative wording or
    serving config (an experiment) instead of the app's own file."""
    root = root.resolve()
    apps = list_apps(root)
    if app not in apps:
        fix = None if apps else f"no apps under {root / 'registry'}; is --project the right directory?"
        raise UnknownNameError("app", app, apps, fix=fix)
    app_dir = root / "registry" / app
    prompt_path = (prompt_file or app_dir / PROMPT_FILE).resolve()
    model_path = (model_file or app_dir / MODEL_FILE).resolve()
    gates_path = app_dir / GATES_FILE
    for path in (prompt_path, model_path, gates_path):
        if not path.is_file():
            raise SpecError(
                "file not found",
                file=path,
                fix=f"an app needs {PROMPT_FILE}, {MODEL_FILE} and {GATES_FILE} in registry/{app}/ "
                "(see README: 'Add an app')",
            )
    prompt = load_spec(prompt_path, PromptSpec)
    model = _with_response_model(load_spec(model_path, ModelSpec), model_path, root)
    if model.engine.backend not in ENGINE_BACKENDS:
        raise UnknownNameError(
            "engine backend",
            model.engine.backend,
            list(ENGINE_BACKENDS),
            file=model_path,
            line=_line(model_path, ("engine", "backend")),
            field="engine.backend",
        )
    gates = load_spec(gates_path, GatePolicy)
    guard_path = app_dir / GUARD_FILE
    guard = load_spec(guard_path, GuardSpec) if guard_path.is_file() else None
    shadow_path = app_dir / SHADOW_FILE
    shadow = load_spec(shadow_path, ShadowSpec) if shadow_path.is_file() else None

    ev_dir = root / "evalsets" / app
    files = sorted(ev_dir.glob("*.jsonl")) if ev_dir.is_dir() else []
    if not files:
        raise SpecError(
            "no evalsets for this app",
            file=ev_dir,
            fix=f"add {ev_dir}/<name>.jsonl and <name>.card.yaml (see README: 'Add an app')",
        )
    evalsets = []
    for f in files:
        card_path = f.with_name(f.stem + ".card.yaml")
        if not card_path.exists():
            raise SpecError(
                "evalset has no card",
                file=f,
                fix=f"create {card_path.name} beside it with version, description and scorers",
            )
        if not _EVALSET_NAME.fullmatch(f.stem):
            raise SpecError(
                f"evalset name '{f.stem}' may hold only letters, digits, '_' and '-' (metric names "
                "are '<evalset>.<score>', so a dot would make them ambiguous)",
                file=f,
                fix="rename the file and its card",
            )
        if f.stem in RESERVED_NAMESPACES:
            raise SpecError(
                f"an evalset may not be called '{f.stem}': metrics named '{f.stem}.*' belong to the "
                "pipeline's own aggregates",
                file=f,
                fix=f"rename it (and its card); reserved: {', '.join(sorted(RESERVED_NAMESPACES))}",
            )
        card = load_spec(card_path, EvalsetCard)
        if card.kind == "redteam" and guard is None:
            raise SpecError(
                "a redteam evalset is judged by the app's guard, and this app has none",
                file=card_path,
                line=_line(card_path, ("kind",)),
                field="kind",
                fix=f"add registry/{app}/{GUARD_FILE} (see README: 'Guardrails')",
            )
        evalsets.append(EvalsetRef(f.stem, f, card, card_path))

    spec = AppSpec(
        app,
        root,
        prompt,
        prompt_path,
        model,
        model_path,
        gates,
        gates_path,
        evalsets,
        guard,
        guard_path if guard else None,
        shadow,
        shadow_path if shadow else None,
    )
    try:
        known = spec.metric_names
    except MetricCollision as exc:
        raise SpecError(str(exc), file=ev_dir, fix="rename the scorer or the evalset") from None
    for i, gate in enumerate(gates.gates):
        if gate.metric not in known:
            raise SpecError(
                f"unknown metric '{gate.metric}'; {_metric_hint(gate.metric, known)}",
                file=gates_path,
                line=_line(gates_path, ("gates", i, "metric")),
                field=f"gates[{i}].metric",
            )
        if gate.max_regression is not None and not spec.has_item_scores(gate.metric):
            metric = spec.catalogue[gate.metric]
            hint = " (ratios are candidate / champion)" if metric.producer == "shadow" else ""
            raise SpecError(
                f"'{gate.metric}' is an aggregate of the {metric.producer} step (no per-item scores): "
                f"use 'min' or 'max'{hint}",
                file=gates_path,
                line=_line(gates_path, ("gates", i, "max_regression")),
                field=f"gates[{i}].max_regression",
            )
    return spec


def _metric_hint(name: str, known: list[str]) -> str:
    """Close matches first, then the available names with per-category guard variants folded."""
    import difflib

    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    folded = list(
        dict.fromkeys(re.sub(r"(guard_\w+_unsafe)\.[A-Z]+[0-9]+$", r"\1.<category>", k) for k in known)
    )
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return hint + "available: " + ", ".join(folded)


def _with_response_model(model: ModelSpec, path: Path, root: Path) -> ModelSpec:
    """Resolve ``response_model`` (a pydantic class by import path) to its JSON Schema, importing
    with the project directory on ``sys.path``; a failure names the file and line."""
    if not model.response_model:
        return model
    import importlib
    import sys

    module_name, _, attr = model.response_model.partition(":")
    where = {"file": path, "line": _line(path, ("response_model",)), "field": "response_model"}
    added = str(root) not in sys.path
    if added:
        sys.path.insert(0, str(root))
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"cannot import '{model.response_model}': {exc}", **where) from None
    finally:
        if added:
            sys.path.remove(str(root))
    schema_fn = getattr(cls, "model_json_schema", None)
    if not callable(schema_fn):
        raise SpecError(f"'{model.response_model}' is not a pydantic model class", **where)
    # The resolved schema is the identity from here on (registered, digested, compared).
    return model.model_copy(update={"response_schema": schema_fn(), "response_model": None})


def git_commit(root: Path) -> str:
    """The commit the specs come from; ``+dirty`` when tracked files differ, ``unknown`` outside Git."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "registry",
                "evalsets",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")
