"""Benchmark: the engine backends side by side on the same prompts, and what resuming costs.

1. ``openai`` vs offline: the offline vLLM engine, then the ``openai`` backend against vLLM's OpenAI
   server started for the same spec on this machine (same weights, engine arguments and prompts,
   one at a time). Target: the HTTP path at >= 0.9x the offline engine's output tokens/s.
2. ``ray``, 1 vs 2 replicas (each a vLLM engine in a Ray actor with ``--cpus-per-replica`` CPUs) on
   a local Ray cluster. On a 2-core box two engines share the same two cores, so expect about 1x:
   the ratio measures the overhead of sharding, not the speed-up a second machine or GPU gives.
3. Resume: generate in chunks with checkpoints, stop at half the chunks (the consumer stops, as a
   killed release does; the chunk queued one ahead is lost with it), then run again: items
   generated again beyond the missing ones (target 0).

    .venv/bin/python bench/scale_out.py [--prompts 96] [--chunk 16] [--skip ray]
    .venv/bin/python bench/scale_out.py --gpu --prompts 2048 --replicas 2   # a GPU box with vllm (CUDA)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _model(**engine):
    import yaml

    from llmrelease.specs import ModelSpec

    raw = yaml.safe_load((REPO / "registry" / "support-triage" / "model.yaml").read_text())
    raw["engine"].update(engine)
    return ModelSpec.model_validate(raw)


def _conversations(n: int) -> list[list[dict[str, str]]]:
    from llmrelease.project import load_app
    from llmrelease.tasks.evaluation.evalsets import load_evalsets

    spec = load_app(REPO, "support-triage", prompt_file=REPO / "examples/support-triage/baseline.prompt.yaml")
    rows = []
    for ev in load_evalsets(spec):
        if ev.name == "tickets":
            rows = [r for chunk in ev.batches() for r in chunk]
    return [spec.prompt.render(rows[i % len(rows)].vars) for i in range(n)]


def _rate(engine, convs, model, chunk: int, rounds: int) -> tuple[float, list[str]]:
    from llmrelease.engines.base import generate_chunks

    chunks = [convs[i : i + chunk] for i in range(0, len(convs), chunk)]
    list(generate_chunks(engine, [convs[:4]], model.sampling, response_schema=model.response_schema))  # warm
    rates, texts = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        batches = list(generate_chunks(engine, chunks, model.sampling, response_schema=model.response_schema))
        wall = time.perf_counter() - t0
        rates.append(sum(b.output_tokens for b in batches) / wall)
        texts = [g.text for b in batches for g in b.generations]
    return statistics.median(rates), texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--cpus-per-replica", type=float, default=0, help="default: the cores / replicas")
    parser.add_argument("--gpu", action="store_true", help="one GPU per replica (needs vllm with CUDA)")
    parser.add_argument("--skip", default="", help="comma list of: openai, ray, resume")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    from llmrelease.engines import openai_http, ray_backend, vllm_offline
    from llmrelease.runtime import configure

    configure()
    convs = _conversations(args.prompts)
    base = _model()
    print(
        f"{args.prompts} prompts (demo tickets, baseline prompt), chunks of {args.chunk}, "
        f"{os.cpu_count()} CPUs"
    )

    offline, _ = vllm_offline.load_engine(base, REPO, None)
    offline_rate, offline_texts = _rate(offline, convs, base, args.chunk, args.rounds)
    print(f"offline vLLM engine:       {offline_rate:7.1f} output tok/s")

    if "openai" not in skip:
        model = _model(backend="openai", concurrency=64)
        engine, info = openai_http.load_engine(model, REPO, None)
        rate, texts = _rate(engine, convs, model, args.chunk, args.rounds)
        same = sum(a == b for a, b in zip(texts, offline_texts, strict=True))
        print(
            f"openai backend (vLLM server, started in {info['engine.startup_s']:.0f} s): {rate:7.1f} tok/s "
            f"= {rate / offline_rate:.2f}x offline (target >= 0.9x); outputs identical {same}/{len(texts)}"
        )
        from llmrelease.engines.openai_server import stop_servers

        stop_servers()

    if "resume" not in skip:
        from llmrelease.tasks.evaluation.checkpoints import ChunkStore, ResumableGeneration

        chunks = [convs[i : i + args.chunk] for i in range(0, len(convs), args.chunk)]
        with tempfile.TemporaryDirectory() as tmp:
            store = ChunkStore(Path(tmp), "bench" * 8)
            first = ResumableGeneration(
                store, lambda: offline, base.sampling, response_schema=base.response_schema
            )
            stream = first.run(chunks)
            half = len(chunks) // 2
            for _ in range(half):
                next(stream)
            stream.close()  # the consumer stops here, as a killed release would
            on_disk = store.chunks()
            again = ResumableGeneration(
                store, lambda: offline, base.sampling, response_schema=base.response_schema
            )
            texts = [g.text for b in again.run(chunks) for g in b.generations]
            missing = len(convs) - on_disk * args.chunk
            extra = again.generated_items - missing
            print(
                f"resume after stopping at {half}/{len(chunks)} chunks: {on_disk} chunks on disk, "
                f"{again.generated_items} items generated again for {missing} missing = {extra} extra "
                f"(target 0); outputs identical to uninterrupted: {texts == offline_texts}"
            )
    vllm_offline.clear_engines()

    if "ray" not in skip:
        rates = {}
        for n in (1, args.replicas):
            # The same cores in both runs: one replica on all of them, or each on its share.
            cpus = args.cpus_per_replica or max(1, (os.cpu_count() or 1) // n)
            resources = {"CPU": cpus, **({"GPU": 1} if args.gpu else {})}
            model = _model(backend="ray", replicas=n, replica_resources=resources)
            engine, info = ray_backend.load_engine(model, REPO, None)
            rates[n], texts = _rate(engine, convs, model, args.chunk, args.rounds)
            same = sum(a == b for a, b in zip(texts, offline_texts, strict=True))
            print(
                f"ray, {n} replica{'s' if n > 1 else ''} x {cpus:g} CPU "
                f"(started in {info['engine.startup_s']:.0f} s): "
                f"{rates[n]:7.1f} tok/s; outputs identical to offline {same}/{len(texts)}"
            )
            for actor in engine.actors:
                __import__("ray").kill(actor)
            ray_backend._ENGINES.clear()
        print(f"ray {args.replicas} vs 1 replica: {rates[args.replicas] / rates[1]:.2f}x")
        ray_backend.shutdown()


if __name__ == "__main__":
    main()
