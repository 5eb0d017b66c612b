"""Evaluate one candidate (model spec + prompt) on the app's evalsets: render, generate, score.

Every item of every evalset goes to the engine in one batch; the engine is looked up in the
process-wide cache so a warm worker does not start it again.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmrelease.engines.base import Engine, GenerationBatch, Progress
from llmrelease.errors import InputError
from llmrelease.specs import ModelSpec, PromptSpec, content_hash
from llmrelease.tasks.evalsets import Evalset
from llmrelease.tasks.scoring import Scores, score_outputs
from llmrelease.tasks.serving import serving_metrics

__all__ = ["Evaluation", "evaluate", "load_engine", "default_engine_factory", "EngineFactory"]

EngineFactory = Callable[[ModelSpec, Path, Path | None], tuple[Engine, dict[str, float]]]
"""(model spec, project root, spec path) -> (engine, info such as start-up seconds)."""


@dataclass
class Evaluation:
    batch: GenerationBatch
    scores: Scores
    metrics: dict[str, float]
    """Score aggregates, serving metrics and cost, ready for MLflow."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    """One record per item for the MLflow table."""
    engine_info: dict[str, float] = field(default_factory=dict)
    guard: Any = None
    """The guard step's outcome (tasks.guard.GuardOutcome) once it has run."""
    shadow: Any = None
    """The shadow comparison (tasks.shadow.ShadowResult) when the app has one and a champion."""


def load_engine(
    model: ModelSpec, project_root: Path, spec_path: Path | None = None
) -> tuple[Engine, dict[str, float]]:
    """The default factory: a vLLM offline engine from the process-wide cache."""
    import time

    from llmrelease.engines.model_source import resolve_model_dir
    from llmrelease.engines.vllm_offline import get_engine

    t0 = time.perf_counter()
    model_dir = resolve_model_dir(model.source, project_root=project_root, spec_path=spec_path)
    resolve_s = time.perf_counter() - t0
    key = content_hash({"model_dir": str(model_dir), "engine": model.engine.model_dump(mode="json")})
    engine, warm = get_engine(key, model_dir, model.engine)
    return engine, {
        "engine.warm": float(warm),
        "engine.startup_s": 0.0 if warm else engine.startup_s,
        "engine.model_resolve_s": resolve_s,
    }


def default_engine_factory() -> EngineFactory:
    """``LLMRELEASE_ENGINE_FACTORY=module:function`` swaps the engine backend for a whole process
    (benchmarks of everything but generation, custom backends); otherwise vLLM."""
    target = os.environ.get("LLMRELEASE_ENGINE_FACTORY")
    if not target:
        return load_engine
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(
            f"LLMRELEASE_ENGINE_FACTORY={target!r} cannot be imported: {exc}",
            fix="use module:function, e.g. llmrelease.engines.instant:instant_engine",
        ) from None


def evaluate(
    model: ModelSpec,
    prompt: PromptSpec,
    evalsets: list[Evalset],
    *,
    project_root: Path,
    model_spec_path: Path | None = None,
    engine_factory: EngineFactory | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    engine, info = (engine_factory or default_engine_factory())(model, project_root, model_spec_path)
    if progress is not None:
        progress(0)  # the engine is ready: generation starts now
    conversations = [prompt.render(row.vars) for ev in evalsets for row in ev.rows]
    batch = engine.generate(
        conversations, model.sampling, response_schema=model.response_schema, progress=progress
    )
    scores = Scores()
    rows: list[dict[str, Any]] = []
    offset = 0
    for ev in evalsets:
        n = len(ev.rows)
        gens = batch.generations[offset : offset + n]
        offset += n
        ids = [r.id for r in ev.rows]
        ev_scores = score_outputs(
            ev.name,
            ev.ref.card.scorers,
            ids,
            [g.text for g in gens],
            [r.reference for r in ev.rows],
            response_schema=model.response_schema,
        )
        scores.merge(ev_scores)
        for row, gen in zip(ev.rows, gens, strict=True):
            record: dict[str, Any] = {
                "evalset": ev.name,
                "id": row.id,
                "output": gen.text,
                "reference": row.reference
                if row.reference is None or isinstance(row.reference, str)
                else _json(row.reference),
                "prompt_tokens": gen.prompt_tokens,
                "output_tokens": gen.output_tokens,
                "latency_s": round(gen.latency_s, 4),
                "ttft_s": round(gen.ttft_s, 4) if gen.ttft_s is not None else None,
            }
            for metric, per_item in ev_scores.items.items():
                record[metric.split(".", 1)[1]] = per_item[row.id]
            rows.append(record)
    metrics = {**scores.aggregates, **serving_metrics(batch, model.pricing)}
    return Evaluation(batch, scores, metrics, rows, info)


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, ensure_ascii=False, sort_keys=True)
