"""Per-chunk checkpoints of generations: a release killed mid-evaluation resumes where it stopped.

Every chunk's generations are written to disk as soon as the engine returns them, under a key made
of everything that decides what the model produces: the generation key (weights digest, the
backend and its endpoint, the vLLM fields, the dtype this host resolves, sampling, response schema,
the engine's library versions) and the chunk's own conversations, exactly as sent. Started again
with the same inputs, a release reads every finished chunk back and generates only the rest; under
greedy decoding its outputs, and so its scores, are those of an uninterrupted run. Anything that
changes the key (a new prompt renders new conversations, another dtype, another vLLM) simply
misses: a checkpoint can be stale only by not being found.

Checkpoints are a cache, not a record: a write that fails is logged and skipped, an unreadable file
is a miss, the candidate's are removed once its run is logged in MLflow (unless
``LLMRELEASE_KEEP_CHECKPOINTS`` is set: then a re-run of the same candidate, say after only its gates
changed, reads them back instead of generating), and directories untouched for
``LLMRELEASE_CHECKPOINT_TTL_DAYS`` (default 7) are removed by the next evaluation.
Where: ``LLMRELEASE_CHECKPOINTS`` (a directory, or ``off``), else ``<cache>/checkpoints``. On a
cluster, point it at a volume every worker of a deployment mounts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from llmrelease.engines.base import Engine, Generation, GenerationBatch, Messages, Progress, generate_chunks
from llmrelease.specs import ModelSpec, SamplingSpec, content_hash

__all__ = [
    "ChunkStore",
    "ResumableGeneration",
    "checkpoint_root",
    "generation_key",
    "keep_checkpoints",
    "open_store",
]

log = logging.getLogger(__name__)

FORMAT = 2
"""Chunk file layout; chunks of another format are a miss. 2: generations carry their
log-probabilities (format 1 had none, and a router must not read a resumed run's as missing)."""
_DEFAULT_TTL_DAYS = 7.0


def checkpoint_root() -> Path | None:
    """``LLMRELEASE_CHECKPOINTS`` (``off`` disables checkpoints), else ``<cache>/checkpoints``."""
    from llmrelease.engines.model_source import cache_dir

    raw = os.environ.get("LLMRELEASE_CHECKPOINTS", "").strip()
    if raw.lower() in {"off", "0", "false", "no"}:
        return None
    return Path(raw).expanduser() if raw else cache_dir() / "checkpoints"


def keep_checkpoints() -> bool:
    """``LLMRELEASE_KEEP_CHECKPOINTS`` (1/true/yes): keep a candidate's chunks after its run is logged.
    Off by default: the chunks are model outputs, and once in MLflow a copy on disk is only a cache."""
    return os.environ.get("LLMRELEASE_KEEP_CHECKPOINTS", "").strip().lower() in {"1", "true", "yes", "on"}


def generation_key(model: ModelSpec, *, weights: str | None, dtype: str | None, endpoint: str | None) -> str:
    """What decides the model's output for a given conversation, as one digest. ``dtype`` is what
    this host resolves ``engine.dtype`` to (bf16 and fp32 answer differently); ``endpoint`` the
    external base URL and served model of the ``openai`` backend (None when llmrelease runs vLLM)."""
    from llmrelease.manifest import stack_versions

    versions = stack_versions()
    return content_hash(
        {
            "format": FORMAT,
            "weights": weights,
            "backend": model.engine.backend,
            "endpoint": endpoint,
            "vllm": model.engine.vllm_fields(),
            "dtype": dtype,
            "sampling": model.sampling.model_dump(mode="json"),
            "response_schema": model.response_schema,
            "stack": {k: versions[k] for k in ("vllm", "torch", "transformers")},
        }
    )


def _conversations_digest(conversations: list[Messages]) -> str:
    h = hashlib.sha256()
    for messages in conversations:
        h.update(json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()[:40]


class ChunkStore:
    """One generation key's chunks: a directory of small JSON files, each written atomically."""

    def __init__(self, root: Path, key: str) -> None:
        self.root = root
        self.dir = root / key[:32]
        self._touched: set[str] = set()
        """The chunks this evaluation read or wrote: all that :meth:`discard` may remove, since
        other releases of the same model (another prompt, or the same one at once) share the dir."""

    def chunk_key(self, conversations: list[Messages]) -> str:
        return _conversations_digest(conversations)

    def load(self, chunk_key: str, items: int) -> tuple[list[Generation], float] | None:
        """The chunk's generations and generation time, or None (absent, unreadable, wrong size)."""
        path = self.dir / f"{chunk_key}.json"
        self._touched.add(chunk_key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT or len(data["generations"]) != items:
                return None
            gens = [Generation(*g) for g in data["generations"]]
            return gens, float(data["wall_s"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, chunk_key: str, generations: list[Generation], wall_s: float) -> None:
        """Best effort: a full disk costs resumability, never the release."""
        self._touched.add(chunk_key)
        data = {
            "format": FORMAT,
            "wall_s": wall_s,
            "generations": [
                [
                    g.text,
                    g.prompt_tokens,
                    g.output_tokens,
                    g.cached_tokens,
                    g.latency_s,
                    g.ttft_s,
                    g.finish_reason,
                    g.mean_logprob,
                    g.min_logprob,
                ]
                for g in generations
            ],
        }
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".chunk-", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.dir / f"{chunk_key}.json")
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("checkpoint of a chunk not written (%s); a re-run would generate it again", exc)

    def chunks(self) -> int:
        """Finished chunks on disk (what a watcher of a long evaluation, or a test, can count)."""
        try:
            return sum(1 for p in self.dir.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
        except OSError:
            return 0

    def discard(self) -> None:
        """Remove this evaluation's chunks (not the ones other releases of the model are using),
        and the directory once it is empty; nothing when ``LLMRELEASE_KEEP_CHECKPOINTS`` is set."""
        if keep_checkpoints():
            self._touched.clear()
            return
        for chunk_key in self._touched:
            with contextlib.suppress(OSError):
                (self.dir / f"{chunk_key}.json").unlink()
        self._touched.clear()
        with contextlib.suppress(OSError):
            self.dir.rmdir()


def prune(root: Path, *, max_age_s: float) -> None:
    """Remove generation directories nobody wrote to for ``max_age_s`` (releases never re-run)."""
    now = time.time()
    with contextlib.suppress(OSError):
        for d in root.iterdir():
            with contextlib.suppress(OSError):
                if d.is_dir() and now - d.stat().st_mtime > max_age_s:
                    shutil.rmtree(d, ignore_errors=True)


def open_store(key: str) -> ChunkStore | None:
    """The store for this generation key (None when checkpoints are off); prunes old ones first."""
    root = checkpoint_root()
    if root is None:
        return None
    raw = os.environ.get("LLMRELEASE_CHECKPOINT_TTL_DAYS", "")
    try:
        days = float(raw) if raw else _DEFAULT_TTL_DAYS
    except ValueError:
        days = _DEFAULT_TTL_DAYS
    prune(root, max_age_s=days * 86400)
    return ChunkStore(root, key)


class ResumableGeneration:
    """Chunks in, batches out, in order: finished chunks read back from the store, the others
    generated (and stored as they finish). The engine is started only when a chunk is missing, so
    a release killed after generation (in the guard, the shadow replay, logging) resumes without
    starting it. Runs of missing chunks stream through the engine back to back; the engine drains
    only where a missing run meets a stored chunk (once, for a killed release: stored, then missing).

    ``wall_s`` is the generation time: each live chunk's time since the previous chunk was handed
    on (as an uninterrupted run measures), and each stored chunk's time as recorded when it was
    generated, so throughput and per-hour cost do not change with resuming."""

    def __init__(
        self,
        store: ChunkStore | None,
        start_engine: Callable[[], Engine],
        sampling: SamplingSpec,
        *,
        response_schema: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.store = store
        self._start_engine = start_engine
        self._engine: Engine | None = None
        self.sampling = sampling
        self.response_schema = response_schema
        self.progress = progress
        self.wall_s = 0.0
        self.reused_chunks = 0
        self.reused_items = 0
        self.generated_chunks = 0
        self.generated_items = 0

    def _lookup(
        self, conversations: list[Messages]
    ) -> tuple[str | None, tuple[list[Generation], float] | None]:
        if self.store is None:
            return None, None
        key = self.store.chunk_key(conversations)
        return key, self.store.load(key, len(conversations))

    def _reused(self, hit: tuple[list[Generation], float]) -> GenerationBatch:
        gens, wall = hit
        self.reused_chunks += 1
        self.reused_items += len(gens)
        self.wall_s += wall
        if self.progress is not None:
            self.progress(len(gens))
        return GenerationBatch(gens, wall)

    def run(self, chunks: Iterable[list[Messages]]) -> Iterator[GenerationBatch]:
        source = iter(chunks)
        mark = time.perf_counter()
        for conversations in source:
            key, hit = self._lookup(conversations)
            if hit is not None:
                yield self._reused(hit)
                mark = time.perf_counter()
                continue
            keys: deque[str | None] = deque([key])
            stored_next: list[tuple[list[Generation], float]] = []

            def segment(
                first: list[Messages] = conversations,
                keys: deque[str | None] = keys,
                stored_next: list[tuple[list[Generation], float]] = stored_next,
            ) -> Iterator[list[Messages]]:
                yield first
                for more in source:
                    k, h = self._lookup(more)
                    if h is not None:  # a stored chunk: finish this run of live ones first
                        stored_next.append(h)
                        return
                    keys.append(k)
                    yield more

            if self._engine is None:
                self._engine = self._start_engine()
                mark = time.perf_counter()  # the engine's start-up is not generation time
            for batch in generate_chunks(
                self._engine,
                segment(),
                self.sampling,
                response_schema=self.response_schema,
                progress=self.progress,
            ):
                now = time.perf_counter()
                spent, mark = now - mark, now
                chunk_key = keys.popleft()
                if self.store is not None and chunk_key is not None:
                    self.store.save(chunk_key, batch.generations, spent)
                self.wall_s += spent
                self.generated_chunks += 1
                self.generated_items += len(batch.generations)
                yield batch
            for h in stored_next:
                yield self._reused(h)
                mark = time.perf_counter()

    def metrics(self) -> dict[str, float]:
        return {
            "checkpoint.chunks_reused": float(self.reused_chunks),
            "checkpoint.items_reused": float(self.reused_items),
            "checkpoint.chunks_generated": float(self.generated_chunks),
            "checkpoint.items_generated": float(self.generated_items),
        }
