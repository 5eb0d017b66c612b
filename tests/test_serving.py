"""Serving metrics and cost on fixed numbers."""

from __future__ import annotations

import pytest

from llmrelease.engines.base import Generation, GenerationBatch
from llmrelease.specs import Pricing
from llmrelease.tasks.evaluation.serving import ServingStats, serving_metrics


def gen(
    latency: float, ttft: float, out: int, prompt: int = 100, cached: int = 0, finish: str = "stop"
) -> Generation:
    return Generation("x", prompt, out, cached, latency, ttft, finish)


def test_serving_metrics_and_cost() -> None:
    batch = GenerationBatch([gen(1.0, 0.2, 9), gen(2.0, 0.5, 11, cached=50, finish="length")], wall_s=2.0)
    m = serving_metrics(
        ServingStats.of(batch), Pricing(input_per_mtok=1.0, output_per_mtok=2.0, cached_input_per_mtok=0.5)
    )
    assert m["serving.tokens_per_s"] == pytest.approx(10.0)
    assert m["serving.output_tokens"] == 20
    assert m["serving.cached_prompt_tokens"] == 50
    assert m["serving.truncated_rate"] == 0.5
    assert m["serving.ttft_p50_s"] == pytest.approx(0.35)
    # time per output token after the first: (1.0-0.2)/8 = 0.1 and (2.0-0.5)/10 = 0.15
    assert m["serving.tpot_p50_s"] == pytest.approx(0.125)
    cost = (100 * 1 + 9 * 2) / 1e6 + (50 * 1 + 50 * 0.5 + 11 * 2) / 1e6
    assert m["cost.total"] == pytest.approx(cost)
    assert m["cost.per_1k_requests"] == pytest.approx(cost / 2 * 1000)


def test_no_pricing_means_no_cost_metrics() -> None:
    m = serving_metrics(ServingStats.of(GenerationBatch([gen(1.0, 0.2, 3)], wall_s=1.0)), None)
    assert "cost.total" not in m
    assert Generation("x", 1, 1, 0, 1.0, 0.5).tpot_s is None
