"""Shadow comparison statistics: distributions, not only means. Pure logic on fixed numbers.

For each side: TTFT, time per output token and latency percentiles (p50/p95/p99), tokens, prefix
cache hit rate, cost per request and per 1,000 requests. Between sides: output-length distribution
(two-sample Kolmogorov-Smirnov), agreement of outputs (exact, and ROUGE-L F1), and the ratios the
shadow gates read (``shadow.ttft_p95_ratio`` = candidate / champion, ...).
"""

from __future__ import annotations

import numpy as np

from llmrelease.engines.base import Measurement
from llmrelease.specs import Pricing

__all__ = ["side_metrics", "compare_sides", "paired", "percentile"]
# The gateable shadow aggregates and their meaning are declared in llmrelease.catalogue.SHADOW_METRICS.


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def _cost(m: Measurement, pricing: Pricing, *, cached: bool) -> float:
    return pricing.cost(m.prompt_tokens, m.output_tokens, m.cached_tokens if cached else 0)


def side_metrics(
    prefix: str, measurements: list[Measurement], pricing: Pricing | None, wall_s: float
) -> dict[str, float]:
    """``<prefix>.ttft_p50_s`` ... for one side; failed requests count in ``error_rate`` only."""
    ok = [m for m in measurements if m.error is None]
    n = len(ok)
    out: dict[str, float] = {
        f"{prefix}.requests": float(len(measurements)),
        f"{prefix}.error_rate": (len(measurements) - n) / len(measurements) if measurements else 0.0,
    }
    if not ok:
        return out
    ttft = [m.ttft_s for m in ok if m.ttft_s is not None]
    tpot = [t for m in ok if (t := m.tpot_s) is not None]
    latency = [m.latency_s for m in ok]
    prompt = sum(m.prompt_tokens for m in ok)
    cached = sum(m.cached_tokens for m in ok)
    output = sum(m.output_tokens for m in ok)
    for name, values in (("ttft", ttft), ("tpot", tpot), ("latency", latency)):
        for q in (50, 95, 99):
            out[f"{prefix}.{name}_p{q}_s"] = percentile(values, q)
    out[f"{prefix}.prompt_tokens"] = float(prompt)
    out[f"{prefix}.cached_prompt_tokens"] = float(cached)
    out[f"{prefix}.output_tokens"] = float(output)
    out[f"{prefix}.mean_output_tokens"] = output / n
    out[f"{prefix}.prefix_cache_hit_rate"] = cached / prompt if prompt else 0.0
    out[f"{prefix}.tokens_per_s"] = output / wall_s if wall_s > 0 else 0.0
    if pricing is not None:
        if pricing.gpu_per_hour is not None:
            # Self-hosted: the GPU's time is the cost, shared by the requests served in it.
            per_request = pricing.gpu_per_hour * wall_s / 3600 / n
            with_cache = without_cache = per_request
        else:
            with_cache = sum(_cost(m, pricing, cached=True) for m in ok) / n
            without_cache = sum(_cost(m, pricing, cached=False) for m in ok) / n
        out[f"{prefix}.cost_per_request"] = with_cache
        out[f"{prefix}.cost_per_1k_requests"] = with_cache * 1000
        out[f"{prefix}.cost_per_1k_requests_without_cache"] = without_cache * 1000
        out[f"{prefix}.prefix_cache_saving_per_1k"] = (without_cache - with_cache) * 1000
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not np.isfinite(a) or not np.isfinite(b) or b <= 0:
        return None
    return a / b


def paired(
    champion: list[Measurement], candidate: list[Measurement]
) -> list[tuple[Measurement, Measurement]]:
    """(champion, candidate) for each request both sides answered without error, in candidate order."""
    by_id = {m.id: m for m in champion if m.error is None}
    return [(by_id[m.id], m) for m in candidate if m.error is None and m.id in by_id]


def compare_sides(
    champion: list[Measurement],
    candidate: list[Measurement],
    metrics: dict[str, float],
    rouge: list[float] | None = None,
) -> dict[str, float]:
    """``shadow.*``: ratios (candidate / champion; > 1 is worse for times and cost), agreement, and
    the KS test on output lengths. ``metrics`` holds both sides' ``side_metrics``; ``rouge``: ROUGE-L
    F1 per ``paired`` request, when computed."""
    from scipy.stats import ks_2samp

    out: dict[str, float] = {}
    for name in (
        "ttft_p50_s",
        "ttft_p95_s",
        "tpot_p50_s",
        "tpot_p95_s",
        "latency_p95_s",
        "cost_per_1k_requests",
    ):
        r = _ratio(metrics.get(f"candidate.{name}"), metrics.get(f"champion.{name}"))
        if r is not None:
            out[f"shadow.{name.removesuffix('_s')}_ratio"] = r
    pairs = paired(champion, candidate)
    out["shadow.paired_requests"] = float(len(pairs))
    if pairs:
        out["shadow.agreement_exact"] = sum(a.text.strip() == b.text.strip() for a, b in pairs) / len(pairs)
        if rouge is not None and rouge:
            out["shadow.agreement_rouge_l"] = float(np.mean(rouge))
        la = [a.output_tokens for a, _ in pairs]
        lb = [b.output_tokens for _, b in pairs]
        if len(set(la + lb)) > 1:
            ks = ks_2samp(la, lb)
            out["shadow.length_ks_statistic"] = float(ks.statistic)
            out["shadow.length_ks_pvalue"] = float(ks.pvalue)
        else:
            out["shadow.length_ks_statistic"], out["shadow.length_ks_pvalue"] = 0.0, 1.0
    return out
