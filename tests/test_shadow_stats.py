"""Shadow statistics, pricing, shadow gates and the HTML report on fixed numbers (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrelease.catalogue import MetricCatalogue, shadow_metrics
from llmrelease.engines.base import Measurement
from llmrelease.errors import SpecError
from llmrelease.project import load_app
from llmrelease.specs import EngineSpec, Gate, GatePolicy, Pricing
from llmrelease.tasks.gates.decisions import evaluate_gates as _evaluate_gates
from llmrelease.tasks.shadow.report import shadow_html
from llmrelease.tasks.shadow.stats import compare_sides, side_metrics

PRICES = Pricing(input_per_mtok=1.0, output_per_mtok=2.0, cached_input_per_mtok=0.5)


def m(
    i: int, ttft: float, latency: float, out: int, prompt: int = 100, cached: int = 0, text: str = "x"
) -> Measurement:
    return Measurement(f"r{i}", text, ttft, latency, prompt, cached, out)


def test_side_metrics_percentiles_tokens_cache_and_cost() -> None:
    ms = [
        m(i, ttft=0.1 * (i + 1), latency=0.1 * (i + 1) + 0.9, out=10, cached=50 if i % 2 else 0)
        for i in range(10)
    ]
    ms.append(Measurement("bad", "", None, 0.0, 0, 0, 0, "HTTP 500"))
    out = side_metrics("candidate", ms, PRICES, wall_s=2.0)
    assert out["candidate.requests"] == 11 and out["candidate.error_rate"] == pytest.approx(1 / 11)
    assert out["candidate.ttft_p50_s"] == pytest.approx(0.55)
    assert out["candidate.ttft_p95_s"] == pytest.approx(0.955)
    assert out["candidate.tpot_p50_s"] == pytest.approx(0.1)  # 0.9 s over 9 tokens after the first
    assert out["candidate.prefix_cache_hit_rate"] == pytest.approx(250 / 1000)
    assert out["candidate.tokens_per_s"] == pytest.approx(100 / 2.0)
    # Per request: 100 prompt tokens (50 cached on half), 10 output tokens.
    without = (100 * 1.0 + 10 * 2.0) / 1e6
    with_cache = without - 0.5 * (50 * (1.0 - 0.5)) / 1e6
    assert out["candidate.cost_per_1k_requests_without_cache"] == pytest.approx(without * 1000)
    assert out["candidate.cost_per_1k_requests"] == pytest.approx(with_cache * 1000)
    assert out["candidate.prefix_cache_saving_per_1k"] == pytest.approx((without - with_cache) * 1000)


def test_gpu_hour_pricing_shares_the_machine_time() -> None:
    gpu = Pricing(gpu_per_hour=3.6)
    out = side_metrics("champion", [m(i, 0.1, 1.0, 5) for i in range(4)], gpu, wall_s=10.0)
    assert out["champion.cost_per_request"] == pytest.approx(3.6 * 10 / 3600 / 4)
    with pytest.raises(ValueError, match="not both"):
        Pricing(gpu_per_hour=1.0, input_per_mtok=1.0, output_per_mtok=1.0)
    with pytest.raises(ValueError, match="or gpu_per_hour"):
        Pricing(input_per_mtok=1.0)


def test_compare_sides_ratios_agreement_and_ks() -> None:
    champ = [m(i, 0.1, 1.0, 10, text=f"a{i % 2}") for i in range(20)]
    cand = [m(i, 0.2, 1.5, 10 + (i % 5) * 4, text="a0") for i in range(20)]
    cm = side_metrics("champion", champ, PRICES, 1.0)
    dm = side_metrics("candidate", cand, PRICES, 1.0)
    out = compare_sides(champ, cand, {**cm, **dm}, rouge=[1.0, 0.5])
    assert out["shadow.ttft_p95_ratio"] == pytest.approx(2.0)
    assert out["shadow.latency_p95_ratio"] == pytest.approx(1.5)
    assert out["shadow.cost_per_1k_requests_ratio"] > 1.0  # longer answers cost more
    assert out["shadow.agreement_exact"] == pytest.approx(0.5)
    assert out["shadow.agreement_rouge_l"] == pytest.approx(0.75)
    assert out["shadow.length_ks_pvalue"] < 0.05 and out["shadow.paired_requests"] == 20
    same = compare_sides(champ, champ, {**cm, **side_metrics("candidate", champ, PRICES, 1.0)})
    assert same["shadow.length_ks_pvalue"] == 1.0 and same["shadow.ttft_p95_ratio"] == 1.0


def evaluate_gates(*args, **kwargs):
    return _evaluate_gates(*args, catalogue=MetricCatalogue(shadow_metrics()), **kwargs)


def test_shadow_gates_are_absolute_and_skip_without_a_champion() -> None:
    policy = GatePolicy(version="g", gates=[Gate(name="ttft", metric="shadow.ttft_p95_ratio", max=1.1)])
    assert evaluate_gates(policy, {"shadow.ttft_p95_ratio": 1.05}, {}, {}).results[0].verdict == "pass"
    assert evaluate_gates(policy, {"shadow.ttft_p95_ratio": 1.2}, {}, {}).results[0].verdict == "fail"
    first = evaluate_gates(policy, {}, {}, None).results[0]
    assert first.verdict == "skipped" and "nothing to shadow" in first.evidence
    assert evaluate_gates(policy, {}, {}, {}).results[0].verdict == "fail"  # champion but no numbers


def test_regression_gate_on_a_shadow_metric_is_refused(project: Path) -> None:
    gates = project / "registry/support-triage/gates.yaml"
    gates.write_text(
        gates.read_text()
        + "  - name: cost-vs-champion\n"
        + "    metric: shadow.cost_per_1k_requests_ratio\n"
        + "    max_regression: 0.1\n"
    )
    with pytest.raises(SpecError, match="no per-item scores") as info:
        load_app(project, "support-triage")
    assert gates.read_text().splitlines()[info.value.line - 1].strip().startswith("max_regression")


def test_html_report_has_plots_gates_and_numbers() -> None:
    champ = [m(i, 0.1 + i / 100, 1.0, 10) for i in range(8)]
    cand = [m(i, 0.2, 1.5, 12) for i in range(8)]
    metrics = {**side_metrics("champion", champ, PRICES, 1.0), **side_metrics("candidate", cand, PRICES, 1.0)}
    metrics.update(compare_sides(champ, cand, metrics))
    gates = [
        {
            "name": "ttft",
            "metric": "shadow.ttft_p95_ratio",
            "value": 1.7,
            "threshold": "<= 1.1",
            "verdict": "fail",
        }
    ]
    page = shadow_html(
        "app: shadow <v2>", {"champion": champ, "candidate": cand}, metrics, notes=["n1"], gates=gates
    )
    assert page.startswith("<!doctype html>") and page.count("<svg") == 3  # CDFs, lengths, cost
    assert "app: shadow &lt;v2&gt;" in page and "class='fail'" in page
    assert "ttft_p95_s" in page and "shadow.agreement_exact" in page


def test_server_command_line_from_the_engine_spec() -> None:
    from llmrelease.engines.openai_server import server_args

    engine = EngineSpec(
        dtype="bfloat16",
        enforce_eager=True,
        max_model_len=2048,
        kv_cache_memory_bytes=1 << 30,
        extra={"tensor_parallel_size": 2, "enable_chunked_prefill": True, "disable_thing": False},
    )
    args = server_args(Path("/m"), engine, name="app", port=8123, prefix_caching=True)
    assert args[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(args)
    for part in (
        "--model /m",
        "--served-model-name app",
        "--port 8123",
        "--enable-prefix-caching",
        "--enable-prompt-tokens-details",
        "--enforce-eager",
        "--max-model-len 2048",
        f"--kv-cache-memory-bytes {1 << 30}",
        "--tensor-parallel-size 2",
        "--enable-chunked-prefill",
    ):
        assert part in joined, part
    assert "--disable-thing" not in joined
    assert "--no-enable-prefix-caching" in server_args(
        Path("/m"), engine, name="a", port=1, prefix_caching=False
    )


def test_guard_on_replayed_traffic() -> None:
    from datetime import UTC, datetime

    from llmrelease.specs import ModelSpec, PromptSpec, TrafficRecord
    from llmrelease.tasks.guard.verdict import parse_verdict
    from llmrelease.tasks.shadow.replay import ShadowResult, Side, guard_shadow
    from llmrelease.tasks.shadow.traffic import TrafficSample

    model = ModelSpec(version="m", source={"hf_dir": "/m"}, sampling={"temperature": 0, "max_tokens": 8})
    prompt = PromptSpec(version="p", messages=[{"role": "user", "content": "{{ q }}"}])
    records = [
        TrafficRecord(id=f"r{i}", timestamp=datetime.now(UTC), app="a", vars={"q": f"q{i}"}) for i in range(4)
    ]
    sides = {
        s: [m(i, 0.1, 1.0, 3, text=f"{s} answer {i}") for i in range(4)] for s in ("champion", "candidate")
    }
    result = ShadowResult(TrafficSample(records, "x"), sides, {}, [{"id": f"r{i}"} for i in range(4)])
    seen = []

    def classify(convs):  # a recorded guard: flags the candidate's answer to r3 and the prompt r0
        seen.extend(convs)
        out = []
        for c in convs:
            text = c[-1]["content"]
            out.append(parse_verdict("unsafe\nS1" if text in ("candidate answer 3", "q0") else "safe"))
        return out

    guard_shadow(
        result, Side("champion", "1", model, prompt), Side("candidate", "2", model, prompt), classify
    )
    assert len(seen) == 12 and seen[0] == [{"role": "user", "content": "q0"}]
    assert result.metrics["traffic.guard_prompt_unsafe_rate"] == 0.25
    assert result.metrics["champion.guard_response_unsafe_rate"] == 0.0
    assert result.metrics["candidate.guard_response_unsafe_rate"] == 0.25
    assert result.rows[3]["candidate_guard"] == "unsafe:S1" and result.rows[3]["champion_guard"] == "safe"
