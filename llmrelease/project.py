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

from llmrelease.catalogue import RESERVED_NAMESPACES, MetricCatalogue, MetricCollision, app_catalogue
from llmrelease.engines.backends import ENGINE_BACKENDS
from llmrelease.errors import EvalsetError, SpecError, UnknownNameError
from llmrelease.inputfiles import check_file, check_inside
from llmrelease.specfile import _node_for, compose_file, load_spec
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
    node = _node_for(compose_file(path), loc)
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
    check_inside(app_dir, root)
    # --prompt/--model files are explicit choices and may live anywhere; the app's own files must
    # be the project's (and its Git history's), not whatever a link out of it points at.
    for own in (
        *((app_dir / PROMPT_FILE,) if prompt_file is None else ()),
        *((app_dir / MODEL_FILE,) if model_file is None else ()),
        app_dir / GATES_FILE,
        app_dir / GUARD_FILE,
        app_dir / SHADOW_FILE,
    ):
        check_inside(own, root)
    gates_path = app_dir / GATES_FILE
    for path in (prompt_file or app_dir / PROMPT_FILE, model_file or app_dir / MODEL_FILE, gates_path):
        if not path.exists() and not path.is_symlink():
            raise SpecError(
                "file not found",
                file=path,
                fix=f"an app needs {PROMPT_FILE}, {MODEL_FILE} and {GATES_FILE} in registry/{app}/ "
                "(see README: 'Add an app')",
            )
        check_file(path)  # a directory, or a broken link, named as such
    prompt_path = (prompt_file or app_dir / PROMPT_FILE).resolve()
    model_path = (model_file or app_dir / MODEL_FILE).resolve()
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
    guard = load_spec(guard_path, GuardSpec) if _optional(guard_path) else None
    shadow_path = app_dir / SHADOW_FILE
    shadow = load_spec(shadow_path, ShadowSpec) if _optional(shadow_path) else None
    if shadow is not None and not shadow.traffic.source.startswith("s3://"):
        check_inside(
            Path(shadow.traffic.source).expanduser(),
            root,
            file=shadow_path,
            line=_line(shadow_path, ("traffic", "source")),
            field="traffic.source",
        )

    ev_dir = root / "evalsets" / app
    check_inside(ev_dir, root)
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
        check_inside(f, root, error=EvalsetError)
        check_file(f, error=EvalsetError, what="JSONL file")
        if not card_path.exists() and not card_path.is_symlink():
            raise SpecError(
                "evalset has no card",
                file=f,
                fix=f"create {card_path.name} beside it with version, description and scorers",
            )
        check_inside(card_path, root)
        check_file(card_path)
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


def _optional(path: Path) -> bool:
    """Whether an optional spec (guard.yaml, shadow.yaml) is there; a directory or a broken link in
    its place is an error, not an absent spec (the app would silently lose its guard)."""
    if not path.exists() and not path.is_symlink():
        return False
    check_file(path)
    return True


def _metric_hint(name: str, known: list[str]) -> str:
    """Close matches first, then the available names with per-category guard variants folded."""
    import difflib

    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    folded = list(
        dict.fromkeys(re.sub(r"(guard_\w+_unsafe)\.[A-Z]+[0-9]+$", r"\1.<category>", k) for k in known)
    )
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return hint + "available: " + ", ".join(folded)


def _module_path(root: Path, module_name: str) -> Path | None:
    """The file a module name would load from the project directory (without importing anything),
    or None when it is not in the project (an installed package)."""
    base = root.joinpath(*module_name.split("."))
    for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return None


def _forget_project_modules(before: set[str], root: Path) -> None:
    """Drop the modules an import loaded from the project's own files (not from an environment
    that lives inside the project directory, such as a .venv: those are not reloaded safely)."""
    import sys

    envs = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    for name in set(sys.modules) - before:
        origin = getattr(sys.modules.get(name), "__file__", None)
        if not origin:
            continue
        path = Path(origin).resolve()
        if (
            path.is_relative_to(root)
            and not any(path.is_relative_to(env) for env in envs)
            and "site-packages" not in path.parts
            and "dist-packages" not in path.parts
        ):
            del sys.modules[name]


def _one_line(exc: BaseException) -> str:
    """An exception as one line: its type and first line, and where a syntax error is."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, SyntaxError) and exc.filename:
        text = f"{exc.msg} ({Path(exc.filename).name}, line {exc.lineno})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _with_response_model(model: ModelSpec, path: Path, root: Path) -> ModelSpec:
    """Resolve ``response_model`` (a pydantic class by import path) to its JSON Schema, importing
    with the project directory on ``sys.path``; any failure (a missing module, an exception while
    importing it, an attribute that is not a pydantic model) names the file and line.

    Modules imported from the project are forgotten afterwards, so a later load (the flow's plan
    step, another project in the same process) imports the file as it is then."""
    if not model.response_model:
        return model
    import importlib
    import sys

    from pydantic import BaseModel

    module_name, _, attr = model.response_model.partition(":")
    where = {"file": path, "line": _line(path, ("response_model",)), "field": "response_model"}
    local = _module_path(root, module_name)
    if local is not None:  # checked before it runs: every directory on the way, then the file
        check_inside(local, root, **where)
    added = str(root) not in sys.path
    before = set(sys.modules)
    if added:
        sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if not (module_name == missing or module_name.startswith(missing + ".")):
            raise SpecError(
                f"cannot import '{model.response_model}': importing '{module_name}' raised {_one_line(exc)}",
                **where,
                fix=f"install '{missing}' where the release runs, or stop importing it",
            ) from None
        raise SpecError(
            f"cannot import '{model.response_model}': no module named '{missing}'",
            **where,
            fix=f"the project directory is importable: put {missing.replace('.', '/')}.py under {root}",
        ) from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's module: any failure is theirs
        raise SpecError(
            f"cannot import '{model.response_model}': importing '{module_name}' raised {_one_line(exc)}",
            **where,
            fix="run `python -c 'import " + module_name + "'` in the project directory to see the traceback",
        ) from None
    finally:
        if added:
            sys.path.remove(str(root))
        _forget_project_modules(before, root)
    cls = getattr(module, attr, None)
    if cls is None:
        raise SpecError(
            f"cannot import '{model.response_model}': module '{module_name}' has no attribute '{attr}'",
            **where,
        )
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
        raise SpecError(
            f"'{model.response_model}' is not a pydantic model class (got {type(cls).__name__})",
            **where,
            fix="point it at a subclass of pydantic.BaseModel",
        )
    try:
        schema = cls.model_json_schema()
    except Exception as exc:  # noqa: BLE001 - e.g. a field type with no JSON Schema
        raise SpecError(f"'{model.response_model}' has no JSON Schema: {_one_line(exc)}", **where) from None
    # The resolved schema is the identity from here on (registered, digested, compared).
    return model.model_copy(update={"response_schema": schema, "response_model": None})


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
