"""A zero-cost engine: answers every conversation at once with a fixed, schema-valid text.

Not a model. It exists to measure and test everything *except* generation (spec sync, evalset
loading, scoring, gates, MLflow logging, promotion) at any size, e.g.
``LLMRELEASE_ENGINE_FACTORY=llmrelease.engines.instant:instant_engine``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from llmrelease.engines.base import Generation, GenerationBatch, Messages, Progress
from llmrelease.specs import ModelSpec, SamplingSpec

__all__ = ["InstantEngine", "instant_engine", "example_for_schema"]


def example_for_schema(schema: dict[str, Any] | None) -> Any:
    """A small value that satisfies common JSON Schemas (objects, enums, strings, numbers)."""
    if not schema:
        return "ok"
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: example_for_schema(v) for k, v in props.items()}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return "ok"


def _confidence(conversation: Messages, text: str) -> tuple[float, float]:
    """(mean, min) log-probabilities in [-3, 0], min <= mean, from a hash of the conversation and
    the output: every answer's text is the same, and a router's tests need confidences that differ
    between items yet are the same on every run."""
    h = hashlib.blake2b(digest_size=16)
    for m in conversation:
        h.update(m["content"].encode())
        h.update(b"\0")
    h.update(text.encode())
    digest = h.digest()
    u, v = (int.from_bytes(digest[i : i + 8], "big") / 2**64 for i in (0, 8))
    mean = -3.0 * u
    return mean, mean - v * (mean + 3.0)


class InstantEngine:
    def generate(
        self,
        conversations: list[Messages],
        sampling: SamplingSpec,
        *,
        response_schema: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> GenerationBatch:
        value = example_for_schema(response_schema)
        text = json.dumps(value) if response_schema else str(value)
        out_tokens = max(1, len(text) // 4)
        gens = [
            Generation(
                text,
                sum(len(m["content"]) for m in conv) // 4,
                out_tokens,
                0,
                0.0,
                0.0,
                "stop",
                *_confidence(conv, text),
            )
            for conv in conversations
        ]
        if progress is not None:
            progress(len(gens))
        return GenerationBatch(gens, wall_s=1e-9)


def instant_engine(
    model: ModelSpec, project_root: Path, spec_path: Path | None = None
) -> tuple[InstantEngine, dict[str, float]]:
    """An ``EngineFactory`` (see ``llmrelease.tasks.evaluation.step``)."""
    return InstantEngine(), {"engine.warm": 1.0, "engine.startup_s": 0.0, "engine.model_resolve_s": 0.0}
