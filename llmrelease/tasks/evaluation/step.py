"""Evaluate one candidate (model spec + prompt) on the app's evalsets: render, generate, score.

Rows stream through in chunks (render -> generate -> score -> records on disk), one stream over
every evalset so the engine stays busy across evalset boundaries; what stays in memory is one
score per item per metric and the serving numbers. The engine is looked up in the process-wide
cache so a warm worker does not start it again.
"""

from __future__ import annotations

import importlib
import json
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmrelease.engines.backends import EngineFactory, backend_factory
from llmrelease.engines.base import Engine, Generation, Messages, Progress
from llmrelease.errors import InputError
from llmrelease.specs import EvalsetRow, ModelSpec, PromptSpec
from llmrelease.tasks.evaluation.checkpoints import (
    ChunkStore,
    ResumableGeneration,
    generation_key,
    open_store,
)
from llmrelease.tasks.evaluation.evalsets import Evalset
from llmrelease.tasks.evaluation.items import ItemIds, ItemSpool, ScoreBuilder, ScoreColumn, Scores
from llmrelease.tasks.evaluation.scoring import score_chunk
from llmrelease.tasks.evaluation.serving import ServingStats, item_columns, serving_metrics
from llmrelease.tasks.gates.sequential import SequentialMonitor

__all__ = ["Evaluation", "evaluate", "load_engine", "default_engine_factory", "EngineFactory"]


@dataclass
class Evaluation:
    serving: ServingStats
    scores: Scores
    metrics: dict[str, float]
    """Score aggregates, serving metrics and cost, ready for MLflow."""
    items: ItemSpool = field(default_factory=ItemSpool)
    """One record per item for the MLflow table, on disk, in evalset row order."""
    item_ids: dict[str, ItemIds] = field(default_factory=dict)
    """Each evalset's item ids, in row order, shared by its score columns."""
    engine_info: dict[str, float] = field(default_factory=dict)
    guard: Any = None
    """The guard step's outcome (tasks.guard.step.GuardOutcome) once it has run."""
    shadow: Any = None
    """The shadow comparison (tasks.shadow.replay.ShadowResult) when the app has one and a champion."""
    sequential: SequentialMonitor | None = None
    """The gates watched on the stream (``statistics.sequential``), with their confidence sequences."""
    checkpoints: ChunkStore | None = None
    """Where this evaluation's chunks were checkpointed (discarded once its results are recorded)."""
    not_run: dict[str, str] = field(default_factory=dict)
    """Steps deliberately not run, by the producer of their metrics, with why (the shadow replay of
    a candidate that had already failed a gate): their gates are skipped, not failed closed."""
    item_serving: dict[str, ScoreColumn] = field(default_factory=dict)
    """Per-item serving columns, ``<evalset>.cost`` (token-priced models only), ``<evalset>.mean_logprob``
    and ``<evalset>.min_logprob`` (NaN where the backend gives none), over the evalset's own item ids:
    a cascade router's inputs. Kept out of ``scores``, so gates, aggregates and reports do not see them."""

    def discard_checkpoints(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.discard()


def load_engine(
    model: ModelSpec, project_root: Path, spec_path: Path | None = None
) -> tuple[Engine, dict[str, float]]:
    """The default factory: the backend the model spec names (``engine.backend``, default vLLM)."""
    return backend_factory(model.engine.backend)(model, project_root, spec_path)


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
    monitor: SequentialMonitor | None = None,
    shuffle_seed: int = 0,
    checkpoints: bool = True,
) -> Evaluation:
    """Generate and score every row of ``evalsets`` in chunks. With a ``monitor`` (sequential
    gates), a watched evalset streams in a seeded random order and its remaining rows are skipped
    once the monitor has decided all of its gates. Finished chunks are checkpointed (see
    :mod:`.checkpoints`): run again with the same inputs, only the missing chunks are generated."""
    factory = engine_factory or default_engine_factory()
    info: dict[str, float] = {}

    def start_engine() -> Engine:
        engine, started = factory(model, project_root, model_spec_path)
        info.update(started)
        if progress is not None:
            progress(0)  # the engine is ready: generation starts now
        return engine

    store = _checkpoints(model, project_root, model_spec_path, factory) if checkpoints else None
    generation = ResumableGeneration(
        store, start_engine, model.sampling, response_schema=model.response_schema, progress=progress
    )
    # The rows of each chunk wait here while the engine generates for it (at most two chunks).
    waiting: deque[tuple[Evalset, list[EvalsetRow]]] = deque()
    stopped: set[str] = set()

    def conversations() -> Iterator[list[Messages]]:
        for ev in evalsets:
            watched = monitor is not None and monitor.watches(ev.name)
            for rows in ev.shuffled_batches(shuffle_seed) if watched else ev.batches():
                if ev.name in stopped:
                    if progress is not None:
                        progress(len(rows))  # skipped: the bar still reaches its total
                    continue
                waiting.append((ev, rows))
                yield [prompt.render(row.vars) for row in rows]

    builders = {ev.name: ScoreBuilder() for ev in evalsets}
    serving_builders = {ev.name: ScoreBuilder() for ev in evalsets}  # columns that are not scores
    spool = ItemSpool()
    serving = ServingStats()
    for batch in generation.run(conversations()):
        ev, rows = waiting.popleft()
        gens = batch.generations
        if len(gens) != len(rows):
            raise RuntimeError(f"the engine returned {len(gens)} outputs for {len(rows)} items")
        serving.add(gens)
        chunk_scores = score_chunk(
            ev.ref.card.scorers,
            [g.text for g in gens],
            [r.reference for r in rows],
            response_schema=model.response_schema,
        )
        named = {f"{ev.name}.{k}": v for k, v in chunk_scores.items()}
        ids = [r.id for r in rows]
        builders[ev.name].add(ids, named)
        per_item = item_columns(gens, model.pricing)
        serving_builders[ev.name].add(ids, {f"{ev.name}.{k}": v for k, v in per_item.items()})
        spool.append(_records(ev.name, rows, gens, chunk_scores))
        if monitor is not None and monitor.update(ev.name, ids, named):
            stopped.add(ev.name)
    serving.wall_s = generation.wall_s  # until the last output, not counting the last chunk's scoring
    info.update(generation.metrics())
    scores = Scores()
    item_ids = {}
    item_serving: dict[str, ScoreColumn] = {}
    for name, builder in builders.items():
        scores.merge(builder.build())
        item_ids[name] = builder.item_ids
        item_serving.update(serving_builders[name].build(share=builder.item_ids).items)
    metrics = {**scores.aggregates, **serving_metrics(serving, model.pricing)}
    if monitor is not None:
        metrics.update(_sequential_metrics(monitor, evalsets, serving))
    return Evaluation(
        serving,
        scores,
        metrics,
        spool,
        item_ids,
        info,
        sequential=monitor,
        checkpoints=store,
        item_serving=item_serving,
    )


def _checkpoints(
    model: ModelSpec, project_root: Path, spec_path: Path | None, factory: EngineFactory
) -> ChunkStore | None:
    """The chunk store of this model's generations, for a real backend only: a test engine's
    outputs are not the model's, and must never be read back as if they were."""
    if factory is not load_engine:
        return None
    from llmrelease.engines.model_source import locate_source
    from llmrelease.manifest import dir_digest

    path, weights = locate_source(model.source, project_root=project_root, spec_path=spec_path)
    if weights is None:
        weights = dir_digest(path)
    engine = model.engine
    endpoint = None
    if engine.backend == "openai":
        base = engine.base_url or os.environ.get("OPENAI_BASE_URL")
        endpoint = f"{base} {engine.served_model or ''}" if base else None
    dtype = None
    if endpoint is None:  # llmrelease runs vLLM here: what engine.dtype means on this host
        from llmrelease.engines.vllm_offline import vllm_dtype

        dtype = vllm_dtype(engine.dtype)
    return open_store(generation_key(model, weights=weights, dtype=dtype, endpoint=endpoint))


def _sequential_metrics(
    monitor: SequentialMonitor, evalsets: list[Evalset], serving: ServingStats
) -> dict[str, float]:
    """Items generated out of the total, per watched evalset and overall, and the generation time
    the skipped rows would have taken at this run's own pace."""
    out: dict[str, float] = {}
    used_total = skipped_total = 0
    for ev in evalsets:
        if not monitor.watches(ev.name):
            continue
        used = monitor.used.get(ev.name, 0)
        out[f"sequential.{ev.name}.items_used"] = float(used)
        out[f"sequential.{ev.name}.items_total"] = float(ev.size)
        used_total += used
        skipped_total += ev.size - used
    generated = sum(monitor.used.values()) or 1
    out["sequential.items_used"] = float(used_total)
    out["sequential.items_total"] = float(used_total + skipped_total)
    out["sequential.time_saved_s"] = serving.wall_s / generated * skipped_total
    return out


def _records(
    evalset: str, rows: list[EvalsetRow], gens: list[Generation], scores: dict[str, list[float]]
) -> Iterator[dict[str, Any]]:
    """One table record per item: what was asked for, what came back, how long it took, its scores."""
    for n, (row, gen) in enumerate(zip(rows, gens, strict=True)):
        yield {
            "evalset": evalset,
            "id": row.id,
            "inputs": _json(row.vars),
            "output": gen.text,
            "reference": row.reference
            if row.reference is None or isinstance(row.reference, str)
            else _json(row.reference),
            "prompt_tokens": gen.prompt_tokens,
            "output_tokens": gen.output_tokens,
            "latency_s": round(gen.latency_s, 4),
            "ttft_s": round(gen.ttft_s, 4) if gen.ttft_s is not None else None,
            "mean_logprob": round(gen.mean_logprob, 4) if gen.mean_logprob is not None else None,
            **{name: values[n] for name, values in scores.items()},
        }


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)
