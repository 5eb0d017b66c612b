"""vLLM offline batch engine: one engine per model spec per process, evalsets streamed in chunks.

Each chunk of conversations is enqueued whole and the engine's own step loop runs it, so vLLM's
continuous batching does the scheduling; the next chunk is enqueued before the current one drains,
and we only watch requests finish (for the progress bar and per-item latency). Loaded engines are
kept in a small process-wide cache so a long-lived process (a worker, a test session) pays the
start-up once per model spec.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llmrelease.engines.base import Generation, GenerationBatch, Messages, Progress, StreamingEngine
from llmrelease.engines.dtype import dtype_bits, resolve_dtype
from llmrelease.engines.process_layout import single_process_on_cpu
from llmrelease.specs import EngineSpec, ModelSpec, SamplingSpec

__all__ = [
    "VllmEngine",
    "get_engine",
    "clear_engines",
    "sampling_params",
    "sampled_logprobs",
    "load_engine",
    "vllm_dtype",
]

_CACHE: OrderedDict[str, VllmEngine] = OrderedDict()
_LOCK = threading.Lock()
_MAX_ENGINES = int(os.environ.get("LLMRELEASE_MAX_ENGINES", "2"))
_ATEXIT_REGISTERED = False


def vllm_dtype(name: str) -> str:
    """The ``--dtype`` vLLM gets for a spec's dtype on this host (:mod:`.dtype`)."""
    import torch

    return resolve_dtype(name, accelerator=torch.cuda.is_available())


class VllmEngine(StreamingEngine):
    def __init__(self, model_dir: Path, engine: EngineSpec) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        single_process_on_cpu(os.environ)
        from vllm import LLM

        self.dtype = vllm_dtype(engine.dtype)
        kwargs: dict[str, Any] = {
            "model": str(model_dir),
            "dtype": self.dtype,
            "enforce_eager": engine.enforce_eager,
            "seed": engine.seed,
            # Per-request timestamps (first token) come from the engine's stats.
            "disable_log_stats": False,
            "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
        }
        if engine.max_model_len is not None:
            kwargs["max_model_len"] = engine.max_model_len
        if engine.kv_cache_memory_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = engine.kv_cache_memory_bytes
        elif engine.gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = engine.gpu_memory_utilization
        kwargs.update(engine.extra)
        t0 = time.perf_counter()
        self.llm = LLM(**kwargs)
        self.startup_s = time.perf_counter() - t0
        self.model_dir = model_dir
        self._lock = threading.Lock()

    def close(self) -> None:
        """Stop the engine-core process. Needed at exit: multiprocessing joins its non-daemon
        children before weakref finalizers run, so relying on vLLM's finalizer can hang the exit."""
        engine_core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None:
            with contextlib.suppress(Exception):  # best effort at shutdown
                engine_core.shutdown()

    def generate_stream(
        self,
        chunks: Iterable[list[Messages]],
        sampling: SamplingSpec,
        *,
        response_schema: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> Iterator[GenerationBatch]:
        """One batch per chunk, in order. The next chunk is always queued in the engine while the
        current one finishes, so the engine never drains between chunks, and at most two chunks
        are held. Latency and TTFT count from the chunk's submission."""
        params = sampling_params(sampling, response_schema)
        engine = self.llm.llm_engine
        source = iter(chunks)
        queued: deque[tuple[list[str], float, dict[str, Generation]]] = deque()
        owner: dict[str, tuple[dict[str, Generation], float]] = {}

        def submit() -> None:
            conversations = next(source, None)
            if conversations is None:
                return
            t = time.perf_counter()
            # enqueue_chat returns vLLM's internal ids ("<external>-<8 random chars>"); outputs
            # carry the external one, LLM's request counter (digits only).
            internal = self.llm.enqueue_chat(conversations, params, use_tqdm=False)
            ids = [str(i).split("-", 1)[0] for i in internal]
            done: dict[str, Generation] = {}
            queued.append((ids, t, done))
            owner.update((i, (done, t)) for i in ids)

        with self._lock:  # one stream at a time: the step loop below owns the engine
            try:
                submit()
                submit()
                while queued:
                    ids, t, done = queued[0]
                    while len(done) < len(ids) and engine.has_unfinished_requests():
                        for out in engine.step():
                            if out.finished:
                                slot, submitted = owner.pop(str(out.request_id))
                                slot[str(out.request_id)] = _generation(out, time.perf_counter() - submitted)
                                if progress is not None:
                                    progress(1)
                    if len(done) != len(ids):
                        raise RuntimeError(f"vLLM returned {len(done)} outputs for {len(ids)} items")
                    queued.popleft()
                    submit()
                    yield GenerationBatch([done[i] for i in ids], time.perf_counter() - t)
            finally:
                if owner:  # the consumer stopped early or a step failed: leave the engine empty
                    with contextlib.suppress(Exception):
                        engine.abort_request(list(owner))
                    with contextlib.suppress(Exception):
                        while engine.has_unfinished_requests():
                            engine.step()

    def complete(self, texts: list[str], *, max_tokens: int, regex: str | None = None) -> list[str]:
        """Greedy completions of raw prompt texts (special tokens already written in them), for
        classifiers such as Llama Guard whose prompt is built outside the chat template path."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        tokenizer = self.llm.get_tokenizer()
        prompts = [{"prompt_token_ids": tokenizer.encode(t, add_special_tokens=False)} for t in texts]
        params = SamplingParams(
            temperature=0.0,
            max_tokens=max_tokens,
            structured_outputs=StructuredOutputsParams(regex=regex) if regex else None,
        )
        with self._lock:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]


def _generation(out: Any, latency_s: float) -> Generation:
    completion = out.outputs[0]
    stats = out.metrics
    sampled = sampled_logprobs(completion)
    ttft = getattr(stats, "first_token_latency", None) if stats is not None else None
    return Generation(
        text=completion.text,
        prompt_tokens=len(out.prompt_token_ids or []),
        output_tokens=len(completion.token_ids),
        cached_tokens=int(out.num_cached_tokens or 0),
        latency_s=latency_s,
        ttft_s=float(ttft) if ttft else None,
        finish_reason=completion.finish_reason,
        mean_logprob=None if not sampled else sum(sampled) / len(sampled),
        min_logprob=None if not sampled else min(sampled),
    )


def sampled_logprobs(completion: Any) -> list[float]:
    """Each generated token's log-probability, in order ([] when none were requested or generated).

    vLLM returns one position per generated token, as ``FlatLogprobs`` (flat lists, a range per
    position) or as a list of ``{token id: Logprob}`` dicts, each holding the sampled token and any
    top-k ones; the sampled token's entry is picked by id (vLLM puts it first: the fallback). Flat
    ones are read in place, not through their per-position dicts (an object per token), and known
    by their fields, so this reads vLLM's outputs without importing it (7 s) in pure tests."""
    positions = completion.logprobs
    if not positions:
        return []
    ids = list(completion.token_ids)
    out: list[float] = []
    if hasattr(positions, "start_indices"):  # vllm.logprobs.FlatLogprobs
        for n, (start, end) in enumerate(zip(positions.start_indices, positions.end_indices, strict=True)):
            if start == end:
                continue
            pick = start
            if n < len(ids) and positions.token_ids[start] != ids[n]:
                pick = next((j for j in range(start, end) if positions.token_ids[j] == ids[n]), start)
            out.append(float(positions.logprobs[pick]))
        return out
    for n, entries in enumerate(positions):
        if not entries:
            continue
        entry = entries.get(ids[n]) if n < len(ids) else None
        out.append(float((entry or next(iter(entries.values()))).logprob))
    return out


def sampling_params(sampling: SamplingSpec, response_schema: dict[str, Any] | None = None) -> Any:
    """vLLM SamplingParams for a spec; the response schema is enforced at decode time. Each sampled
    token's log-probability comes back (``logprobs=0``: that token only, no top-k alternatives), in
    the flat form, which makes a handful of lists per request instead of an object per token."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    return SamplingParams(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_tokens,
        stop=sampling.stop or None,
        seed=sampling.seed,
        structured_outputs=StructuredOutputsParams(json=response_schema) if response_schema else None,
        logprobs=0,
        flat_logprobs=True,
    )


def get_engine(key: str, model_dir: Path, engine: EngineSpec) -> tuple[VllmEngine, bool]:
    """The cached engine for this key, or a new one; returns (engine, was_warm)."""
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key], True
        while len(_CACHE) >= _MAX_ENGINES:
            _, old = _CACHE.popitem(last=False)
            old.close()
            del old
            gc.collect()
        eng = VllmEngine(model_dir, engine)
        _CACHE[key] = eng
        global _ATEXIT_REGISTERED
        if not _ATEXIT_REGISTERED:
            # Registered after vLLM imported multiprocessing, so it runs before multiprocessing's
            # own exit handler (atexit is last-in, first-out).
            atexit.register(clear_engines)
            _ATEXIT_REGISTERED = True
        return eng, False


def clear_engines() -> None:
    """Close and forget every cached engine."""
    with _LOCK:
        while _CACHE:
            _, eng = _CACHE.popitem()
            eng.close()
        gc.collect()


def load_engine(
    model: ModelSpec, project_root: Path, spec_path: Path | None = None
) -> tuple[VllmEngine, dict[str, float]]:
    """The ``vllm`` backend's factory: the model's weights resolved (a GGUF converted once), then
    an engine from the process-wide cache."""
    from llmrelease.engines.model_source import resolve_model_dir
    from llmrelease.specs import content_hash

    t0 = time.perf_counter()
    model_dir = resolve_model_dir(model.source, project_root=project_root, spec_path=spec_path)
    resolve_s = time.perf_counter() - t0
    key = content_hash({"model_dir": str(model_dir), "engine": model.engine.model_dump(mode="json")})
    engine, warm = get_engine(key, model_dir, model.engine)
    return engine, {
        "engine.warm": float(warm),
        "engine.startup_s": 0.0 if warm else engine.startup_s,
        "engine.model_resolve_s": resolve_s,
        "engine.dtype_bits": dtype_bits(engine.dtype),
    }
