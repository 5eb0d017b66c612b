"""Each generation's confidence (its tokens' log-probabilities): read from vLLM's outputs, kept by the
checkpoints, and carried per item beside the scores, never among them (a cascade router's input)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from llmrelease.engines.base import Generation, GenerationBatch
from llmrelease.engines.instant import InstantEngine, instant_engine
from llmrelease.engines.vllm_offline import _generation, sampled_logprobs
from llmrelease.specs import Pricing, SamplingSpec
from llmrelease.tasks.evaluation.checkpoints import FORMAT, ChunkStore, ResumableGeneration
from tests.conftest import copy_project

APP = "support-triage"
SAMPLING = SamplingSpec(temperature=0, max_tokens=8)
COLUMNS = ("cost", "mean_logprob", "min_logprob")


def _conversations(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"q{i}"}] for i in range(n)]


class _Engine:
    """Answers with fixed log-probabilities; counts the items it was asked for."""

    def __init__(self) -> None:
        self.items = 0

    def generate(self, conversations, sampling, *, response_schema=None, progress=None) -> GenerationBatch:
        self.items += len(conversations)
        gens = [
            Generation("a", 3, 2, 0, 0.01, 0.005, "stop", -0.25 * i, -0.5 * i)
            for i in range(len(conversations))
        ]
        return GenerationBatch(gens, 0.01)


def test_a_checkpointed_chunk_keeps_the_log_probabilities(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, "k" * 64)
    gens = [
        Generation("a", 3, 2, 0, 0.01, 0.005, "stop", -0.125, -1.5),
        Generation("b", 3, 0, 0, 0.01, None, "length"),  # nothing generated: no confidence
    ]
    store.save("c", gens, 0.5)
    assert store.load("c", 2) == (gens, 0.5)


def test_a_chunk_written_before_log_probabilities_is_generated_again(tmp_path: Path) -> None:
    """A format-1 chunk has no log-probabilities: read back, a resumed run would report none."""
    assert FORMAT == 2
    store = ChunkStore(tmp_path, "k" * 64)
    data = [_conversations(2)]
    key = store.chunk_key(data[0])
    store.dir.mkdir(parents=True)
    old = {"format": 1, "wall_s": 0.5, "generations": [["a", 3, 2, 0, 0.01, 0.005, "stop"]] * 2}
    (store.dir / f"{key}.json").write_text(json.dumps(old))
    assert store.load(key, 2) is None
    engine = _Engine()
    gen = ResumableGeneration(store, lambda: engine, SAMPLING)
    [batch] = list(gen.run(data))
    assert engine.items == 2 and [g.min_logprob for g in batch.generations] == [0.0, -0.5]
    assert store.load(key, 2) == (batch.generations, pytest.approx(gen.wall_s))


def test_the_instant_engine_gives_each_answer_a_fixed_confidence() -> None:
    engine = InstantEngine()
    first = engine.generate(_conversations(20), SAMPLING).generations
    again = engine.generate(_conversations(20), SAMPLING).generations
    assert first == again
    assert {g.text for g in first} == {"ok"}  # the outputs themselves are unchanged
    assert all(-3.0 <= g.min_logprob <= g.mean_logprob <= 0.0 for g in first)
    assert len({g.mean_logprob for g in first}) == 20  # items differ, so a router has something to rank


@dataclass
class _Flat:
    """The fields of vLLM's ``FlatLogprobs`` the reader uses (the real one is in the e2e test below)."""

    start_indices: list[int] = field(default_factory=list)
    end_indices: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.start_indices)


def _out(token_ids: list[int], logprobs) -> SimpleNamespace:
    completion = SimpleNamespace(text="x", token_ids=token_ids, logprobs=logprobs, finish_reason="stop")
    return SimpleNamespace(outputs=[completion], metrics=None, prompt_token_ids=[1, 2], num_cached_tokens=0)


def test_the_sampled_tokens_log_probabilities_are_read_from_either_form() -> None:
    lp = SimpleNamespace
    # Top-k entries beside the sampled token (id 7 at the first position is not the sampled one).
    as_dicts = [{7: lp(logprob=-0.1), 5: lp(logprob=-2.0)}, {6: lp(logprob=-0.5)}]
    flat = _Flat([0, 2], [2, 3], [7, 5, 6], [-0.1, -2.0, -0.5])
    for form in (as_dicts, flat):
        assert sampled_logprobs(_out([5, 6], form).outputs[0]) == [-2.0, -0.5]
        gen = _generation(_out([5, 6], form), 0.1)
        assert (gen.mean_logprob, gen.min_logprob) == (-1.25, -2.0)
    # The only entry of a position is taken when the ids disagree.
    assert sampled_logprobs(_out([9], [{7: lp(logprob=-0.3)}]).outputs[0]) == [-0.3]


@pytest.mark.parametrize("logprobs", [None, [], _Flat()], ids=["not-requested", "list", "flat"])
def test_no_generated_token_means_no_confidence(logprobs) -> None:
    gen = _generation(_out([], logprobs), 0.1)
    assert gen.output_tokens == 0 and gen.mean_logprob is None and gen.min_logprob is None


def _evaluate(project: Path, **model_changes):
    from llmrelease.project import load_app
    from llmrelease.tasks.evaluation.evalsets import load_evalsets
    from llmrelease.tasks.evaluation.step import evaluate

    spec = load_app(project, APP)
    model = spec.model.model_copy(update=model_changes)
    evalsets = load_evalsets(spec)
    ev = evaluate(model, spec.prompt, evalsets, project_root=project, engine_factory=instant_engine)
    return model, evalsets, ev


def test_the_evaluation_carries_cost_and_confidence_per_item_beside_the_scores(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    model, evalsets, ev = _evaluate(project)
    names = [e.name for e in evalsets]
    assert set(ev.item_serving) == {f"{n}.{c}" for n in names for c in COLUMNS}
    for name in names:
        ids = ev.item_ids[name]
        for column in COLUMNS:
            assert ev.item_serving[f"{name}.{column}"].item_ids is ids  # the evalset's ids, shared
    # Not scores: no gate, aggregate, metric or report sees them.
    assert not set(ev.item_serving) & (set(ev.scores.items) | set(ev.scores.aggregates) | set(ev.metrics))
    total = sum(ev.item_serving[f"{n}.cost"].values.sum() for n in names)
    assert total == pytest.approx(ev.metrics["cost.total"])
    records = [r for chunk in ev.items.chunks(1000) for r in chunk]
    first = records[0]
    assert first["mean_logprob"] == round(ev.item_serving[f"{first['evalset']}.mean_logprob"][first["id"]], 4)
    cost = ev.item_serving[f"{first['evalset']}.cost"][first["id"]]
    assert cost == model.pricing.cost(first["prompt_tokens"], first["output_tokens"], 0)
    mean, low = ev.item_serving["tickets.mean_logprob"].values, ev.item_serving["tickets.min_logprob"].values
    assert np.all(low <= mean) and np.all(mean <= 0)


def test_without_token_prices_there_is_no_per_item_cost(tmp_path: Path) -> None:
    """A self-hosted price is the machine's time, shared by the batch: no one item's cost."""
    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    _, evalsets, ev = _evaluate(project, pricing=Pricing(gpu_per_hour=2.0))
    assert set(ev.item_serving) == {f"{e.name}.{c}" for e in evalsets for c in COLUMNS[1:]}
    assert "cost.total" in ev.metrics


@pytest.mark.e2e
def test_a_vllm_generation_carries_its_tokens_log_probabilities(project: Path) -> None:
    """Through the session's engine (the cache: no second start-up). vLLM 0.32 returns the flat form
    as asked (``flat_logprobs``); the list of dicts it gives otherwise reads the same."""
    from llmrelease.project import load_app
    from llmrelease.tasks.evaluation.evalsets import load_evalsets
    from llmrelease.tasks.evaluation.step import load_engine

    spec = load_app(project, APP)
    engine, _ = load_engine(spec.model, project, spec.model_path)
    rows = next(e for e in load_evalsets(spec) if e.name == "tickets").rows()[:4]
    convs = [spec.prompt.render(r.vars) for r in rows]
    gens = engine.generate(convs, spec.model.sampling, response_schema=spec.model.response_schema).generations
    for g in gens:
        assert g.output_tokens > 0
        assert math.isfinite(g.mean_logprob) and g.mean_logprob <= 0
        assert math.isfinite(g.min_logprob) and g.min_logprob <= g.mean_logprob

    from vllm.logprobs import FlatLogprobs

    from llmrelease.engines.vllm_offline import sampling_params

    params = sampling_params(spec.model.sampling, spec.model.response_schema)
    flat = engine.llm.chat(convs, params, use_tqdm=False)
    params.flat_logprobs = False
    listed = engine.llm.chat(convs, params, use_tqdm=False)
    for f, li in zip(flat, listed, strict=True):
        assert isinstance(f.outputs[0].logprobs, FlatLogprobs) and isinstance(li.outputs[0].logprobs, list)
        assert len(sampled_logprobs(f.outputs[0])) == len(f.outputs[0].token_ids)
        assert sampled_logprobs(f.outputs[0]) == pytest.approx(sampled_logprobs(li.outputs[0]), abs=1e-4)
