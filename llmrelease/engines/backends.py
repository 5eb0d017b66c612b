"""Engine backends by name: what ``engine.backend`` in a model spec selects.

A backend is an ``EngineFactory``: (model spec, project root, spec path) -> (engine, info). The
registry holds import paths, not objects, so choosing a backend imports only that backend (vLLM
costs ~10 s to import). Adding a backend is its module plus one line here: see README, "Extending".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from llmrelease.engines.base import Engine
from llmrelease.errors import UnknownNameError
from llmrelease.specs import ModelSpec

__all__ = ["EngineFactory", "ENGINE_BACKENDS", "backend_factory"]

EngineFactory = Callable[[ModelSpec, Path, Path | None], tuple[Engine, dict[str, float]]]
"""(model spec, project root, spec path) -> (engine, info such as start-up seconds)."""

ENGINE_BACKENDS: dict[str, str] = {
    "vllm": "llmrelease.engines.vllm_offline:load_engine",
    "openai": "llmrelease.engines.openai_http:load_engine",
    "ray": "llmrelease.engines.ray_backend:load_engine",
}
"""Backend name -> ``module:function`` of its factory."""


def backend_factory(name: str) -> EngineFactory:
    try:
        target = ENGINE_BACKENDS[name]
    except KeyError:
        raise UnknownNameError("engine backend", name, list(ENGINE_BACKENDS)) from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
