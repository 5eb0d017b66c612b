"""Benchmark 1: the pipeline's generation step versus bare vLLM on the same work.

One process, one loaded engine (SmolLM2-135M, the demo's model spec), the same rendered prompts,
the same sampling parameters and response schema. Alternates the pipeline's path (the engine
stream the release's evaluation uses: chunks enqueued one ahead, its own step loop with per-item
timing) with a bare ``LLM.chat(...)`` of all items; reports output tokens/s of each and the
ratios. Two pipeline variants: the release's default chunk size (all 288 items in one chunk), and
``--chunk`` items per chunk, which shows whether queueing the next chunk ahead keeps the engine as
busy as one big batch. Target: >= 0.95.

    .venv/bin/python bench/pipeline_vs_raw.py [--items 288] [--rounds 3] [--chunk 48]
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
    parser.add_argument("--chunk", type=int, default=48, help="items per chunk of the chunked variant")
    args = parser.parse_args()

    from llmrelease.runtime import configure

    configure()
    from llmrelease.engines.base import generate_chunks
    from llmrelease.engines.vllm_offline import sampling_params
    from llmrelease.project import load_app
    from llmrelease.tasks.evaluation.evalsets import chunk_rows, load_evalsets
    from llmrelease.tasks.evaluation.step import load_engine

    spec = load_app(REPO, "support-triage")
    rows = [r for ev in load_evalsets(spec) for r in ev.rows()]
    convs = [spec.prompt.render(rows[i % len(rows)].vars) for i in range(args.items)]
    engine, _ = load_engine(spec.model, REPO, spec.model_path)
    s = spec.model.sampling
    raw_params = sampling_params(s, spec.model.response_schema)  # the very same SamplingParams

    def stream(size: int) -> tuple[float, int]:
        chunks = (convs[i : i + size] for i in range(0, len(convs), size))
        t0 = time.perf_counter()
        batches = list(generate_chunks(engine, chunks, s, response_schema=spec.model.response_schema))
        return time.perf_counter() - t0, sum(b.output_tokens for b in batches)

    def pipeline() -> tuple[float, int]:
        return stream(chunk_rows())

    def chunked() -> tuple[float, int]:
        return stream(args.chunk)

    def raw() -> tuple[float, int]:
        t0 = time.perf_counter()
        outs = engine.llm.chat(convs, raw_params, use_tqdm=False)
        return time.perf_counter() - t0, sum(len(o.outputs[0].token_ids) for o in outs)

    pipeline(), raw()  # warm-up: grammar compilation, caches
    modes = [("pipeline", pipeline), ("chunked", chunked), ("raw", raw)]
    results: dict[str, list[float]] = {name: [] for name, _ in modes}
    for r in range(args.rounds):
        order = modes[r % 3 :] + modes[: r % 3]  # each mode in each position once every 3 rounds
        for name, fn in order:
            wall, tokens = fn()
            results[name].append(tokens / wall)
            print(
                f"round {r + 1} {name:>8}: {tokens} tokens in {wall:.2f}s = {tokens / wall:.0f} tok/s",
                flush=True,
            )
    p, c, q = (statistics.median(results[name]) for name in ("pipeline", "chunked", "raw"))
    print(f"\nitems={args.items} rounds={args.rounds} default chunk={chunk_rows()} chunked={args.chunk}")
    print(
        f"pipeline {p:.0f} tok/s, raw vLLM {q:.0f} tok/s, ratio pipeline/raw = {p / q:.3f} (target >= 0.95)"
    )
    print(f"chunked pipeline ({args.chunk} per chunk) {c:.0f} tok/s, ratio chunked/raw = {c / q:.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
