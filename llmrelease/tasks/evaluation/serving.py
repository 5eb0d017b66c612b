"""Serving measurements of an evaluation: throughput, latency percentiles, tokens and cost. Pure logic.

Generations arrive chunk by chunk; only their numbers are kept (a few arrays of one value per
item), not the generations themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmrelease.engines.base import Generation, GenerationBatch
from llmrelease.specs import Pricing

__all__ = ["ServingStats", "item_columns", "serving_metrics"]


@dataclass
class ServingStats:
    """Per-item token counts and timings of every generation so far, and the generation wall time."""

    wall_s: float = 0.0
    _cols: dict[str, list[np.ndarray]] = field(default_factory=dict, repr=False)

    def add(self, generations: list[Generation]) -> None:
        def col(values: list[float | None]) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in values], dtype=float)

        new = {
            "prompt_tokens": col([g.prompt_tokens for g in generations]),
            "output_tokens": col([g.output_tokens for g in generations]),
            "cached_tokens": col([g.cached_tokens for g in generations]),
            "latency_s": col([g.latency_s for g in generations]),
            "ttft_s": col([g.ttft_s for g in generations]),
            "tpot_s": col([g.tpot_s for g in generations]),
            "truncated": col([float(g.finish_reason == "length") for g in generations]),
        }
        for name, values in new.items():
            self._cols.setdefault(name, []).append(values)

    @classmethod
    def of(cls, batch: GenerationBatch) -> ServingStats:
        stats = cls(wall_s=batch.wall_s)
        stats.add(batch.generations)
        return stats

    def column(self, name: str) -> np.ndarray:
        parts = self._cols.get(name)
        if not parts:
            return np.zeros(0)
        if len(parts) > 1:  # join once, keep the joined array
            self._cols[name] = parts = [np.concatenate(parts)]
        return parts[0]

    @property
    def items(self) -> int:
        return len(self.column("output_tokens"))

    @property
    def output_tokens(self) -> int:
        return int(self.column("output_tokens").sum())

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s > 0 else 0.0


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else 0.0


def serving_metrics(stats: ServingStats, pricing: Pricing | None) -> dict[str, float]:
    """Aggregates logged as MLflow metrics under ``serving.``. In an offline batch, TTFT and latency
    are measured from the item's submission to the engine (a chunk at a time), so they include
    queueing behind other items."""
    n = stats.items
    latency = stats.column("latency_s")
    ttft = stats.column("ttft_s")
    ttft = ttft[~np.isnan(ttft)]
    tpot = stats.column("tpot_s")
    tpot = tpot[~np.isnan(tpot)]
    prompt_tokens = stats.column("prompt_tokens")
    output_tokens = stats.column("output_tokens")
    cached = stats.column("cached_tokens")
    out: dict[str, float] = {
        "serving.items": float(n),
        "serving.wall_s": stats.wall_s,
        "serving.tokens_per_s": stats.tokens_per_s,
        "serving.prompt_tokens": float(prompt_tokens.sum()),
        "serving.output_tokens": float(output_tokens.sum()),
        "serving.cached_prompt_tokens": float(cached.sum()),
        "serving.mean_output_tokens": float(output_tokens.sum()) / n if n else 0.0,
        "serving.latency_p50_s": _pct(latency, 50),
        "serving.latency_p95_s": _pct(latency, 95),
        "serving.truncated_rate": float(stats.column("truncated").mean()) if n else 0.0,
    }
    if len(ttft):
        out["serving.ttft_p50_s"] = _pct(ttft, 50)
        out["serving.ttft_p95_s"] = _pct(ttft, 95)
    if len(tpot):
        out["serving.tpot_p50_s"] = _pct(tpot, 50)
        out["serving.tpot_p95_s"] = _pct(tpot, 95)
    if pricing is not None and n:
        if pricing.gpu_per_hour is not None:  # self-hosted: the batch's share of the machine's time
            total = pricing.gpu_per_hour * stats.wall_s / 3600
        else:
            total = sum(
                pricing.cost(int(p), int(o), int(c))
                for p, o, c in zip(prompt_tokens, output_tokens, cached, strict=True)
            )
        out["cost.total"] = total
        out["cost.per_1k_requests"] = total / n * 1000
    return out


def item_columns(generations: list[Generation], pricing: Pricing | None) -> dict[str, list[float]]:
    """Per-item serving values, by column name (``cost`` only under token prices: a share of machine
    time is not any one item's), NaN where a generation has none. What a cascade router weighs per
    item: what the answer cost against how sure the model was of it."""
    out = {
        "mean_logprob": [np.nan if g.mean_logprob is None else g.mean_logprob for g in generations],
        "min_logprob": [np.nan if g.min_logprob is None else g.min_logprob for g in generations],
    }
    if pricing is not None and pricing.token_priced:
        out["cost"] = [pricing.cost(g.prompt_tokens, g.output_tokens, g.cached_tokens) for g in generations]
    return out
