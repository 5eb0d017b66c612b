"""One engine interface for every backend: conversations in, generations with serving measurements out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from llmrelease.specs import SamplingSpec

__all__ = [
    "Engine",
    "Generation",
    "GenerationBatch",
    "Measurement",
    "Progress",
    "StreamingEngine",
    "generate_chunks",
]

Messages = list[dict[str, str]]
Progress = Callable[[int], None]
"""Called with the number of items that just finished."""


@dataclass(frozen=True, slots=True)  # one per evalset row: slots keep 100k of them small
class Generation:
    text: str
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int
    latency_s: float
    """From batch submission to this item's last token."""
    ttft_s: float | None
    """From batch submission to this item's first token (queueing included: it is a batch)."""
    finish_reason: str | None = None
    mean_logprob: float | None = None
    """Mean natural-log probability of the generated tokens under the model's raw distribution
    (before temperature and top-p, so comparable across sampling settings), in (-inf, 0]: a cascade
    router's confidence signal. With a response schema it is the distribution over the tokens the
    grammar allows (vLLM masks the logits first), so tokens the schema forces score 0. None when the
    backend returns no log-probabilities or nothing was generated."""
    min_logprob: float | None = None
    """The least likely generated token's log-probability, in (-inf, 0]: one unsure token (the
    category of a triage answer) can hide in a mean over a long, certain answer. None as above."""

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first."""
        if self.ttft_s is None or self.output_tokens < 2:
            return None
        return (self.latency_s - self.ttft_s) / (self.output_tokens - 1)


@dataclass(frozen=True)
class Measurement:
    """One request streamed from an OpenAI-compatible server, as the client saw it (the shadow
    comparison's unit)."""

    id: str
    text: str
    ttft_s: float | None
    latency_s: float
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    error: str | None = None
    chunks: int = 0
    """Streamed content deltas: one per generated token except the end of sequence (a check on
    ``output_tokens``; re-tokenising the text is not, constrained decoding picks non-canonical pieces)."""
    finish_reason: str | None = None
    status: int | None = None
    """The HTTP status when the server refused the request (``error`` is set); None otherwise."""
    retry_after_s: float | None = None
    """The refusal's ``Retry-After``, in seconds, when it gave one."""

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.output_tokens < 2:
            return None
        return (self.latency_s - self.ttft_s) / (self.output_tokens - 1)


@dataclass(frozen=True)
class GenerationBatch:
    generations: list[Generation]
    wall_s: float

    @property
    def output_tokens(self) -> int:
        return sum(g.output_tokens for g in self.generations)

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s > 0 else 0.0


class Engine(Protocol):
    def generate(
        self,
        conversations: list[Messages],
        sampling: SamplingSpec,
        *,
        response_schema: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> GenerationBatch: ...


class StreamingEngine:
    """Base of engines whose real method is ``generate_stream`` (one batch per chunk, the next
    chunk queued while the current one finishes): ``generate`` is a stream of one chunk."""

    def generate_stream(
        self,
        chunks: Iterable[list[Messages]],
        sampling: SamplingSpec,
        *,
        response_schema: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> Iterator[GenerationBatch]:
        raise NotImplementedError

    def generate(
        self,
        conversations: list[Messages],
        sampling: SamplingSpec,
        *,
        response_schema: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> GenerationBatch:
        (batch,) = self.generate_stream(
            [conversations], sampling, response_schema=response_schema, progress=progress
        )
        return batch


def generate_chunks(
    engine: Engine,
    chunks: Iterable[list[Messages]],
    sampling: SamplingSpec,
    *,
    response_schema: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> Iterator[GenerationBatch]:
    """One batch per chunk, in order. An engine with ``generate_stream`` (vLLM) keeps the next chunk
    queued while the current one finishes; any other engine gets one ``generate`` call per chunk."""
    stream = getattr(engine, "generate_stream", None)
    if stream is not None:
        yield from stream(chunks, sampling, response_schema=response_schema, progress=progress)
        return
    for conversations in chunks:
        yield engine.generate(conversations, sampling, response_schema=response_schema, progress=progress)
