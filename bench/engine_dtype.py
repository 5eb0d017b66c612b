"""Benchmark: what ``dtype: auto`` buys on this host: the demo model in vLLM in bf16 and in fp32,
side by side on the same prompts, and whether greedy answers agree.

On a CPU without bf16 units (no AVX512-BF16 / AMX) bf16 is emulated; ``auto`` then picks fp32.
Each dtype gets its own engine (loaded, warmed on 2 prompts, then timed over ``--rounds``).

    .venv/bin/python bench/engine_dtype.py [--prompts 32] [--tokens 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(dtype: str, model_dir: Path, prompts: list[str], tokens: int, rounds: int) -> tuple[float, list[str]]:
    from vllm import LLM, SamplingParams

    llm = LLM(str(model_dir), dtype=dtype, enforce_eager=True, kv_cache_memory_bytes=1 << 30, seed=0)
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    llm.generate(prompts[:2], params, use_tqdm=False)
    rates, texts = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = llm.generate(prompts, params, use_tqdm=False)
        rates.append(sum(len(o.outputs[0].token_ids) for o in out) / (time.perf_counter() - t0))
        texts = [o.outputs[0].text for o in out]
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()
    return statistics.median(rates), texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from llmrelease.engines.dtype import cpu_has_bf16
    from llmrelease.engines.model_source import resolve_model_dir
    from llmrelease.runtime import configure
    from llmrelease.specfile import load_spec
    from llmrelease.specs import ModelSpec

    configure()
    spec_path = REPO / "registry" / "support-triage" / "model.yaml"
    model = load_spec(spec_path, ModelSpec)
    model_dir = resolve_model_dir(model.source, project_root=REPO, spec_path=spec_path)
    prompts = [f"Ticket {i}: my order has not arrived, what should I do?" for i in range(args.prompts)]
    results = {d: run(d, model_dir, prompts, args.tokens, args.rounds) for d in ("bfloat16", "float32")}
    (bf16, bf16_texts), (fp32, fp32_texts) = results["bfloat16"], results["float32"]
    same = sum(a == b for a, b in zip(bf16_texts, fp32_texts, strict=True))
    print(f"cpu has bf16 units: {cpu_has_bf16()}")
    print(f"bf16: {bf16:.0f} tok/s   fp32: {fp32:.0f} tok/s   fp32/bf16: {fp32 / bf16:.2f}x")
    print(f"greedy answers identical in both: {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
