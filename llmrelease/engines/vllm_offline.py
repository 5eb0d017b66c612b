"""vLLM offline batch engine: one engine per model spec per process, every item in one batch.

All conversations are enqueued at once and the engine's own step loop runs them, so vLLM's
continuous batching does the scheduling; we only watch requests finish (for the progress bar and
per-item latency). Loaded engines are kept in a small process-wide cache so a long-lived process
(a worker, a test session) pays the start-up once per model spec.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from llmrelease.engines.base import Generation, GenerationBatch, Messages, Progress
from llmrelease.specs import EngineSpec, SamplingSpec

__all__ = ["VllmEngine", "get_engine", "clear_engines", "sampling_params"]

_CACHE: OrderedDict[str, VllmEngine] = OrderedDict()
_LOCK = threading.Lock()
_MAX_ENGINES = int(os.environ.get("LLMRELEASE_MAX_ENGINES", "2"))
_ATEXIT_REGISTERED = False


class VllmEngine:
    def __init__(self, model_dir: Path, engine: EngineSpec) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        from vllm import LLM

        kwargs: dict[str, Any] = {
            "model": str(model_dir),
            "dtype": engine.dtype,
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

    def generate(
        self,
        conversations: list[Messages],
        sampling: SamplingSpec,
        *,
        response_schema: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> GenerationBatch:
        params = sampling_params(sampling, response_schema)
        engine = self.llm.llm_engine
        with self._lock:  # one batch at a time: the step loop below owns the engine
            t0 = time.perf_counter()
            self.llm.enqueue_chat(conversations, params, use_tqdm=False)
            finished: list[tuple[int, Generation]] = []
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if not out.finished:
                        continue
                    done = time.perf_counter() - t0
                    completion = out.outputs[0]
                    stats = out.metrics
                    ttft = getattr(stats, "first_token_latency", None) if stats is not None else None
                    gen = Generation(
                        text=completion.text,
                        prompt_tokens=len(out.prompt_token_ids or []),
                        output_tokens=len(completion.token_ids),
                        cached_tokens=int(out.num_cached_tokens or 0),
                        latency_s=done,
                        ttft_s=float(ttft) if ttft else None,
                        finish_reason=completion.finish_reason,
                    )
                    # External request ids are vLLM's increasing counter: their order is submission order.
                    finished.append((int(out.request_id), gen))
                    if progress is not None:
                        progress(1)
            wall = time.perf_counter() - t0
        if len(finished) != len(conversations):
            raise RuntimeError(f"vLLM returned {len(finished)} outputs for {len(conversations)} items")
        finished.sort(key=lambda pair: pair[0])
        return GenerationBatch([g for _, g in finished], wall)

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


def sampling_params(sampling: SamplingSpec, response_schema: dict[str, Any] | None = None) -> Any:
    """vLLM SamplingParams for a spec; the response schema is enforced at decode time."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    return SamplingParams(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_tokens,
        stop=sampling.stop or None,
        seed=sampling.seed,
        structured_outputs=StructuredOutputsParams(json=response_schema) if response_schema else None,
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
