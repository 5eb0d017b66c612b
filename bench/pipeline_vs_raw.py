"""Benchmark 1: the pipeline's generation step versus bare vLLM on the same work.

One process, one loaded engine (SmolLM2-135M, the demo's model spec), the same rendered prompts,
the same sampling parameters and response schema. Alternates the pipeline's path
(``VllmEngine.generate``: enqueue all, own step loop with per-item timing) with a bare
``LLM.chat(...)``; reports output tokens/s of each and their ratio. Target: >= 0.95.

    .venv/bin/python bench/pipeline_vs_raw.py [--items 288] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=288)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from llmrelease.runtime import configure

    configure()
    from llmrelease.engines.vllm_offline import sampling_params
    from llmrelease.project import load_app
    from llmrelease.tasks.evalsets import load_evalsets
    from llmrelease.tasks.evaluation import load_engine

    spec = load_app(REPO, "support-triage")
    rows = [r for ev in load_evalsets(spec) for r in ev.rows()]
    convs = [spec.prompt.render(rows[i % len(rows)].vars) for i in range(args.items)]
    engine, _ = load_engine(spec.model, REPO, spec.model_path)
    s = spec.model.sampling
    raw_params = sampling_params(s, spec.model.response_schema)  # the very same SamplingParams

    def pipeline() -> tuple[float, int]:
        batch = engine.generate(convs, s, response_schema=spec.model.response_schema)
        return batch.wall_s, batch.output_tokens

    def raw() -> tuple[float, int]:
        t0 = time.perf_counter()
        outs = engine.llm.chat(convs, raw_params, use_tqdm=False)
        return time.perf_counter() - t0, sum(len(o.outputs[0].token_ids) for o in outs)

    pipeline(), raw()  # warm-up: grammar compilation, caches
    results: dict[str, list[float]] = {"pipeline": [], "raw": []}
    for r in range(args.rounds):
        order = (
            [("pipeline", pipeline), ("raw", raw)] if r % 2 == 0 else [("raw", raw), ("pipeline", pipeline)]
        )
        for name, fn in order:
            wall, tokens = fn()
            results[name].append(tokens / wall)
            print(
                f"round {r + 1} {name:>8}: {tokens} tokens in {wall:.2f}s = {tokens / wall:.0f} tok/s",
                flush=True,
            )
    p, q = statistics.median(results["pipeline"]), statistics.median(results["raw"])
    print(f"\nitems={args.items} rounds={args.rounds}")
    print(
        f"pipeline {p:.0f} tok/s, raw vLLM {q:.0f} tok/s, ratio pipeline/raw = {p / q:.3f} (target >= 0.95)"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
