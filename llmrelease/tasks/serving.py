"""Serving measurements of a batch: throughput, latency percentiles, tokens and cost. Pure logic."""

from __future__ import annotations

import numpy as np

from llmrelease.engines.base import GenerationBatch
from llmrelease.specs import Pricing

__all__ = ["serving_metrics"]


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else 0.0


def serving_metrics(batch: GenerationBatch, pricing: Pricing | None) -> dict[str, float]:
    """Aggregates logged as MLflow metrics under ``serving.``. In an offline batch, TTFT and latency
    are measured from the batch's submission, so they include queueing behind other items."""
    gens = batch.generations
    n = len(gens)
    latency = [g.latency_s for g in gens]
    ttft = [g.ttft_s for g in gens if g.ttft_s is not None]
    tpot = [t for g in gens if (t := g.tpot_s) is not None]
    prompt_tokens = sum(g.prompt_tokens for g in gens)
    cached = sum(g.cached_tokens for g in gens)
    out: dict[str, float] = {
        "serving.items": float(n),
        "serving.wall_s": batch.wall_s,
        "serving.tokens_per_s": batch.tokens_per_s,
        "serving.prompt_tokens": float(prompt_tokens),
        "serving.output_tokens": float(batch.output_tokens),
        "serving.cached_prompt_tokens": float(cached),
        "serving.mean_output_tokens": batch.output_tokens / n if n else 0.0,
        "serving.latency_p50_s": _pct(latency, 50),
        "serving.latency_p95_s": _pct(latency, 95),
        "serving.truncated_rate": (sum(g.finish_reason == "length" for g in gens) / n) if n else 0.0,
    }
    if ttft:
        out["serving.ttft_p50_s"] = _pct(ttft, 50)
        out["serving.ttft_p95_s"] = _pct(ttft, 95)
    if tpot:
        out["serving.tpot_p50_s"] = _pct(tpot, 50)
        out["serving.tpot_p95_s"] = _pct(tpot, 95)
    if pricing is not None and n:
        if pricing.gpu_per_hour is not None:  # self-hosted: the batch's share of the machine's time
            total = pricing.gpu_per_hour * batch.wall_s / 3600
        else:
            total = sum(pricing.cost(g.prompt_tokens, g.output_tokens, g.cached_tokens) for g in gens)
        out["cost.total"] = total
        out["cost.per_1k_requests"] = total / n * 1000
    return out
