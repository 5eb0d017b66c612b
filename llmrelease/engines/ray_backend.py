"""The ``ray`` backend: data-parallel vLLM replicas on a Ray cluster, one engine per Ray actor.

Each chunk is cut into one contiguous shard per replica; shards go to the replicas' actors and
come back in evalset order. The next chunk's shards are queued on the actors before the current
chunk is collected, so no replica idles at a chunk boundary. Ray schedules the actors by the
resources the spec asks for (``replica_resources``: CPUs, GPUs, custom resources), on whatever
nodes the cluster has.

A replica that dies (its node is lost, its process killed, out of memory) is restarted by Ray and
the shard it was running is sent again (``max_restarts`` / ``max_task_retries``): a lost replica
costs its in-flight shard, and the release carries on. If it keeps dying, the release fails with
exit 4 and the chunks already finished are kept by the evaluation's checkpoints, so running it again
resumes (ray-project/ray#59522: at 10M prompts one lost engine killed the whole Ray Data job).

Why actors and not ``ray.data.llm``: its vLLM stage asks Ray for a GPU per engine (with ray 2.60.0
on a CPU-only local cluster the autoscaler reports "No available node types can fulfill resource
request {'CPU': 1.0, 'GPU': 1.0}" and the job never starts), so it cannot run where the CPU build
of vLLM does. The actor path runs the same ``VllmEngine`` as the offline backend on any device, so
its outputs are the offline engine's; checkpointing is the evaluation's, per chunk, for every backend.

Every worker must resolve the model source itself: a ``package`` source needs the package installed
on the workers (the same image), an ``hf_dir``/``gguf`` path must exist there (a shared volume).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llmrelease.engines.base import Generation, GenerationBatch, Messages, Progress, StreamingEngine
from llmrelease.errors import InfrastructureError
from llmrelease.specs import ModelSpec, SamplingSpec

__all__ = ["RayEngine", "load_engine", "shard"]


def shard(items: list[Any], parts: int) -> list[list[Any]]:
    """``items`` cut into at most ``parts`` contiguous, near-equal pieces (none empty), in order."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for n in range(parts):
        end = start + size + (1 if n < extra else 0)
        out.append(items[start:end])
        start = end
    return out


class _Replica:
    """The body of one Ray actor: a vLLM engine for the spec, built on the worker."""

    def __init__(
        self,
        model_json: dict[str, Any],
        project_root: str,
        spec_path: str | None,
        index: int = 0,
        cpus: float = 0,
    ) -> None:
        from llmrelease.engines.model_source import resolve_model_dir
        from llmrelease.engines.vllm_offline import VllmEngine

        if cpus >= 1:
            _pin(index, int(cpus))
        model = ModelSpec.model_validate(model_json)
        model_dir = resolve_model_dir(
            model.source, project_root=Path(project_root), spec_path=Path(spec_path) if spec_path else None
        )
        self.engine = VllmEngine(model_dir, model.engine)

    def info(self) -> dict[str, Any]:
        return {"startup_s": self.engine.startup_s, "dtype": self.engine.dtype, "pid": os.getpid()}

    def generate(
        self, conversations: list[Messages], sampling_json: dict[str, Any], schema: dict[str, Any] | None
    ) -> list[Generation]:
        sampling = SamplingSpec.model_validate(sampling_json)
        return self.engine.generate(conversations, sampling, response_schema=schema).generations

    def pid(self) -> int:
        return os.getpid()


def _pin(index: int, cpus: int) -> None:
    """Give a CPU replica its own ``cpus`` cores. vLLM's CPU backend binds its OpenMP threads to
    every core the process may use, so replicas on one node would fight over the same cores. Ray
    reserves CPU counts, not cores, so replica ``index`` takes the ``index``-th slice of the node's
    cores, through vLLM's own core-list setting (one OpenMP thread per listed core). An explicit
    setting is left alone. (On a 2-core box, 2 one-core replicas gave 0.26x the tokens/s of one
    replica on both cores, 0.31x unpinned: too few cores to show anything but overhead; the
    binding is for nodes with many cores; bench/scale_out.py.)"""
    if "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return
    allowed = sorted(os.sched_getaffinity(0))
    if cpus >= len(allowed):
        return
    start = (index * cpus) % len(allowed)
    cores = (allowed + allowed)[start : start + cpus]
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in cores)


class RayEngine(StreamingEngine):
    """``replicas`` actors, each holding one vLLM engine; chunks sharded across them."""

    def __init__(self, actors: list[Any], *, startup_s: float, dtype: str) -> None:
        self.actors = actors
        self.startup_s = startup_s
        self.dtype = dtype
        self._lock = threading.Lock()

    def generate_stream(
        self,
        chunks: Iterable[list[Messages]],
        sampling: SamplingSpec,
        *,
        response_schema: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> Iterator[GenerationBatch]:
        import ray

        sampling_json = sampling.model_dump(mode="json")
        source = iter(chunks)
        pending: deque[tuple[list[Any], float]] = deque()

        def submit() -> None:
            conversations = next(source, None)
            if conversations is None:
                return
            refs = [
                actor.generate.remote(part, sampling_json, response_schema)
                for actor, part in zip(self.actors, shard(conversations, len(self.actors)), strict=False)
            ]
            pending.append((refs, time.perf_counter()))

        with self._lock:
            try:
                submit()
                submit()
                while pending:
                    refs, submitted = pending[0]
                    parts: dict[Any, list[Generation]] = {}
                    waiting = list(refs)
                    while waiting:  # shards finish in any order; report each as it lands
                        ready, waiting = ray.wait(waiting, num_returns=1)
                        try:
                            parts[ready[0]] = ray.get(ready[0])
                        except ray.exceptions.RayError as exc:
                            raise InfrastructureError(
                                "ray backend: a replica failed for good after its retries: "
                                + _first_line(exc)
                            ) from None
                        if progress is not None:
                            progress(len(parts[ready[0]]))
                    pending.popleft()
                    submit()
                    yield GenerationBatch(
                        [g for r in refs for g in parts[r]], time.perf_counter() - submitted
                    )
            finally:
                for refs, _ in pending:
                    for r in refs:
                        ray.cancel(r, force=False)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


_ENGINES: dict[str, RayEngine] = {}
_ENGINES_LOCK = threading.Lock()


def _connect(address: str | None) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``); without either, start a local one."""
    import ray

    if ray.is_initialized():
        return
    env = {
        "env_vars": {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            # The engine core in the actor's own process: a replica that dies leaves no orphan
            # engine process (and its KV cache) behind, and Ray's restart starts from clean.
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        }
    }
    kwargs: dict[str, Any] = {
        "address": address or os.environ.get("RAY_ADDRESS") or None,
        "runtime_env": env,
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": "WARNING",
    }
    if kwargs["address"] is None:
        kwargs["num_cpus"] = max(os.cpu_count() or 1, 2)  # a local cluster sized to this machine
    try:
        ray.init(**kwargs)
    except Exception as exc:  # ConnectionError, RuntimeError: Ray has no common base for these
        raise InfrastructureError(f"ray backend: cannot join the Ray cluster: {_first_line(exc)}") from None


def load_engine(
    model: ModelSpec, project_root: Path, spec_path: Path | None = None
) -> tuple[RayEngine, dict[str, float]]:
    """The ``ray`` backend's factory: ``engine.replicas`` actors with one vLLM engine each, started
    once per process and spec (like the offline engine cache)."""
    import ray

    from llmrelease.engines.dtype import dtype_bits
    from llmrelease.specs import content_hash

    spec = model.engine
    _connect(spec.ray_address)
    key = content_hash(
        {"model": model.source.model_dump(mode="json"), "engine": spec.model_dump(mode="json")}
    )
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is not None:
            return engine, _info(engine, warm=True)
        resources = dict(spec.replica_resources)
        options: dict[str, Any] = {
            "num_cpus": resources.pop("CPU", 1),
            "num_gpus": resources.pop("GPU", 0),
            "max_restarts": spec.replica_restarts,
            "max_task_retries": spec.replica_restarts,
        }
        if resources:
            options["resources"] = resources
        actor_cls = ray.remote(_Replica).options(**options)
        t0 = time.perf_counter()
        where = (str(project_root), str(spec_path) if spec_path else None)
        cpus = 0.0 if options["num_gpus"] else float(options["num_cpus"])  # GPU replicas are not pinned
        actors = [
            actor_cls.remote(model.model_dump(mode="json"), *where, index, cpus)
            for index in range(spec.replicas)
        ]
        try:
            infos = ray.get([a.info.remote() for a in actors], timeout=spec.replica_startup_timeout_s)
        except Exception as exc:
            for a in actors:
                ray.kill(a)
            raise InfrastructureError(
                f"ray backend: {spec.replicas} replicas did not start: {_first_line(exc)}"
            ) from None
        engine = RayEngine(actors, startup_s=time.perf_counter() - t0, dtype=infos[0]["dtype"])
        _ENGINES[key] = engine
    info = _info(engine, warm=False)
    info["engine.dtype_bits"] = dtype_bits(engine.dtype)
    return engine, info


def _info(engine: RayEngine, *, warm: bool) -> dict[str, float]:
    return {
        "engine.warm": float(warm),
        "engine.startup_s": 0.0 if warm else engine.startup_s,
        "engine.replicas": float(len(engine.actors)),
    }


def shutdown() -> None:
    """Stop every replica and leave the cluster (a local one stops with it)."""
    import sys

    if "ray" not in sys.modules:
        return
    import ray

    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            for a in engine.actors:
                ray.kill(a)
        _ENGINES.clear()
    if ray.is_initialized():
        ray.shutdown()
