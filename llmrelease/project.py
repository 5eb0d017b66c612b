"""A project directory: ``registry/<app>/`` specs and ``evalsets/<app>/`` data, loaded and cross-checked.

Everything here is read and validated before anything is registered, so bad input never leaves a
half-registered version behind.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llmrelease.errors import SpecError, UnknownNameError
from llmrelease.specfile import _node_for, load_spec
from llmrelease.specs import EvalsetCard, GatePolicy, ModelSpec, PromptSpec

__all__ = ["AppSpec", "EvalsetRef", "list_apps", "load_app", "git_commit"]

PROMPT_FILE, MODEL_FILE, GATES_FILE = "prompt.yaml", "model.yaml", "gates.yaml"


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

    @property
    def metric_names(self) -> list[str]:
        return [f"{e.name}.{s.name}" for e in self.evalsets for s in e.card.scorers]


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
    model = load_spec(model_path, ModelSpec)
    gates = load_spec(gates_path, GatePolicy)

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
        evalsets.append(EvalsetRef(f.stem, f, load_spec(card_path, EvalsetCard), card_path))

    spec = AppSpec(app, root, prompt, prompt_path, model, model_path, gates, gates_path, evalsets)
    known = spec.metric_names
    for i, gate in enumerate(gates.gates):
        if gate.metric not in known:
            raise SpecError(
                f"unknown metric '{gate.metric}'; available: {', '.join(known)}",
                file=gates_path,
                line=_line(gates_path, ("gates", i, "metric")),
                field=f"gates[{i}].metric",
            )
    return spec


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
