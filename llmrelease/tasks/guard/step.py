"""The guard step: classify every item's prompt and response with the app's guard, fail closed.

Per item: a verdict for the prompt and one for the response (safe, unsafe with categories, or
unparsed, which counts as unsafe). Per evalset: unsafe rates overall and per category, as per-item
0/1 scores, so the same gates (absolute, or paired against the champion) apply to them. Per run:
the same rates over all items, timing, and the flagged items for the report.

Items stream through in chunks (evalset rows and the evaluation's records side by side); each
record gets its verdicts written back, and only the 0/1 columns and the flagged items are kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmrelease.engines.base import Progress
from llmrelease.specs import GuardSpec, PromptSpec, content_hash
from llmrelease.tasks.evaluation.evalsets import Evalset, chunk_rows
from llmrelease.tasks.evaluation.items import ItemSpool, ScoreBuilder, Scores
from llmrelease.tasks.evaluation.step import Evaluation
from llmrelease.tasks.guard.prompt import Turn, guard_conversation, render_guard_input
from llmrelease.tasks.guard.verdict import Verdict, parse_verdict

__all__ = [
    "GuardClassifier",
    "GuardItem",
    "GuardOutcome",
    "GuardTally",
    "load_guard",
    "run_guard",
    "summarise",
    "verdict_regex",
]

_MEMO_MAX = 200_000
FLAGGED_KEPT = 1000
"""Flagged items kept for reports, per kind (flagged response / flagged prompt only); all are counted,
and every item's verdicts are in the run's table."""


def verdict_regex(codes: list[str]) -> str:
    """The verdict grammar for constrained decoding on vLLM: 'safe' or 'unsafe' and one code."""
    return "safe|unsafe\\n(" + "|".join(codes) + ")"


class GuardClassifier:
    """A loaded guard: conversations in, parsed verdicts out (batched; identical inputs classified once)."""

    def __init__(self, spec: GuardSpec, model_dir: Path) -> None:
        self.spec = spec
        self.categories = [(c.code, c.name, c.description) for c in spec.categories]
        if spec.backend == "vllm":
            from llmrelease.engines.vllm_offline import get_engine

            key = content_hash({"model_dir": str(model_dir), "engine": spec.engine.model_dump(mode="json")})
            self._vllm, _ = get_engine(key, model_dir, spec.engine)
            self.tokenizer = self._vllm.llm.get_tokenizer()
            self._hf = None
        else:
            from llmrelease.tasks.guard.transformers_backend import TransformersGuard

            self._hf = TransformersGuard(
                model_dir,
                device=spec.device,
                dtype=spec.dtype,
                batch_size=spec.batch_size,
                max_new_tokens=spec.max_new_tokens,
                constrain_codes=spec.codes if spec.constrain_verdict else None,
            )
            self.tokenizer = self._hf.tokenizer
        self._memo: dict[bytes, str] = {}
        """Answers by a hash of the guard input (the inputs are ~1 KB each; 200k of them as keys
        would hold hundreds of megabytes)."""

    def render(self, conversation: list[Turn]) -> str:
        return render_guard_input(self.tokenizer, conversation, self.categories, self.spec.prompt_format)

    def raw_answers(self, texts: list[str], progress: Progress | None = None) -> list[str]:
        if self._hf is not None:
            return self._hf.generate(texts, progress)
        regex = verdict_regex(self.spec.codes) if self.spec.constrain_verdict else None
        answers = self._vllm.complete(texts, max_tokens=self.spec.max_new_tokens, regex=regex)
        if progress is not None:
            progress(len(texts))
        return answers

    def classify(self, conversations: list[list[Turn]], progress: Progress | None = None) -> list[Verdict]:
        texts = [self.render(c) for c in conversations]
        keys = [hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts]
        # Greedy classification of the same text gives the same answer: classify each distinct text
        # once, and remember answers for this process (a warm worker does not re-classify the
        # champion's prompts, or the same tickets release after release).
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in self._memo}
        if progress is not None and len(texts) > len(todo):
            progress(len(texts) - len(todo))
        answers = self.raw_answers(list(todo.values()), progress) if todo else []
        for key, answer in zip(todo, answers, strict=True):
            self._memo[key] = sys.intern(answer)  # "safe" a hundred thousand times is one string
        codes = self.spec.codes
        verdicts = [parse_verdict(self._memo[k], codes) for k in keys]
        while len(self._memo) > _MEMO_MAX:
            self._memo.pop(next(iter(self._memo)))
        return verdicts


_GUARDS: dict[str, GuardClassifier] = {}
_LOCK = threading.Lock()


def load_guard(spec: GuardSpec, project_root: Path, spec_path: Path | None = None) -> GuardClassifier:
    """One loaded guard per spec per process (a warm worker classifies without reloading)."""
    from llmrelease.engines.model_source import resolve_model_dir

    model_dir = resolve_model_dir(spec.source, project_root=project_root, spec_path=spec_path)
    key = content_hash({"dir": str(model_dir), "spec": spec.digest()})
    with _LOCK:
        if key not in _GUARDS:
            _GUARDS.clear()  # at most one guard model resident
            _GUARDS[key] = GuardClassifier(spec, model_dir)
        return _GUARDS[key]


@dataclass(frozen=True)
class GuardItem:
    evalset: str
    id: str
    prompt: Verdict | None
    response: Verdict | None
    tags: tuple[str, ...] = ()

    def flagged(self) -> bool:
        # Unparsed verdicts are unsafe (fail closed), so they are flagged too.
        return any(v is not None and v.unsafe for v in (self.prompt, self.response))


@dataclass
class GuardOutcome:
    scores: Scores
    metrics: dict[str, float]
    description: str = ""
    flagged_items: list[dict[str, Any]] = field(default_factory=list)
    """Flagged items (prompt or response unsafe or unparsed), in evalset order: the first
    ``FLAGGED_KEPT`` with a flagged response and the first ``FLAGGED_KEPT`` flagged on the prompt only."""
    flagged_count: int = 0
    """Every flagged item, counted."""

    def flagged(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Flagged items, responses first: what a reviewer reads in the report."""
        out = sorted(
            self.flagged_items, key=lambda r: (r["response"] in (None, "safe"), r["evalset"], r["id"])
        )
        return out if limit is None else out[:limit]


class GuardTally:
    """Collects verdicts chunk by chunk: per evalset, 0/1 score columns
    (``<evalset>.guard_<check>_unsafe[.<code>]``, ``<evalset>.guard_unparsed``); over all items, the
    run-level rates (``guard.<check>_unsafe_rate[.<code>]``, ``guard.unparsed_rate``); and the
    flagged items. Every category gets a column, zeros included, so a per-category gate never sees
    a missing metric."""

    def __init__(self, spec: GuardSpec, evalset_names: list[str]) -> None:
        self.spec = spec
        self.builders = {name: ScoreBuilder() for name in evalset_names}
        self._sums: dict[str, float] = defaultdict(float)
        self._count = 0
        self.flagged: list[dict[str, Any]] = []
        self.flagged_count = 0
        self._kept = {True: 0, False: 0}  # by "the response is flagged"

    def add(self, items: list[GuardItem]) -> None:
        start = 0
        while start < len(items):  # a chunk can span evalsets: one run of items per evalset
            name = items[start].evalset
            end = start
            while end < len(items) and items[end].evalset == name:
                end += 1
            self._add_group(name, items[start:end])
            start = end

    def _add_group(self, name: str, group: list[GuardItem]) -> None:
        # (per-item metric suffix, run-level metric, 0/1 per item)
        columns: list[tuple[str, str, list[float]]] = []
        for check in self.spec.check:
            verdicts = [getattr(it, check) for it in group]
            columns.append(
                (f"guard_{check}_unsafe", f"guard.{check}_unsafe_rate", [float(v.unsafe) for v in verdicts])
            )
            for code in self.spec.codes:
                columns.append(
                    (
                        f"guard_{check}_unsafe.{code}",
                        f"guard.{check}_unsafe_rate.{code}",
                        [float(code in v.categories) for v in verdicts],
                    )
                )
        unparsed = [
            float(any(v is not None and not v.parsed for v in (it.prompt, it.response))) for it in group
        ]
        columns.append(("guard_unparsed", "guard.unparsed_rate", unparsed))
        self.builders.setdefault(name, ScoreBuilder()).add(
            [it.id for it in group], {f"{name}.{suffix}": values for suffix, _, values in columns}
        )
        # Item ids are unique within an evalset only: run-level rates count values, not ids.
        for _, run_metric, values in columns:
            self._sums[run_metric] += sum(values)
        self._count += len(group)
        for it in group:
            if not it.flagged():
                continue
            self.flagged_count += 1
            by_response = it.response is not None and it.response.unsafe
            if self._kept[by_response] >= FLAGGED_KEPT:
                continue  # counted, not kept: a report lists the first ones, the table has all
            self._kept[by_response] += 1
            self.flagged.append(
                {
                    "evalset": it.evalset,
                    "id": it.id,
                    "prompt": it.prompt.label if it.prompt else None,
                    "response": it.response.label if it.response else None,
                    "tags": list(it.tags),
                }
            )

    def result(self, share: dict[str, Any] | None = None) -> tuple[Scores, dict[str, float]]:
        """(scores, metrics); ``share``: evalset name -> the evaluation's ItemIds, reused."""
        scores = Scores()
        for name, builder in self.builders.items():
            scores.merge(builder.build((share or {}).get(name)))
        metrics = dict(scores.aggregates)
        for key, total in self._sums.items():
            metrics[key] = total / self._count if self._count else 0.0
        return scores, metrics


def summarise(
    spec: GuardSpec, items: list[GuardItem], evalset_names: list[str]
) -> tuple[Scores, dict[str, float]]:
    """:class:`GuardTally` over one list of items."""
    tally = GuardTally(spec, evalset_names)
    tally.add(items)
    return tally.result()


def run_guard(
    spec: GuardSpec,
    prompt: PromptSpec,
    evalsets: list[Evalset],
    items: ItemSpool,
    *,
    project_root: Path,
    spec_path: Path | None = None,
    progress: Progress | None = None,
    share: dict[str, Any] | None = None,
) -> GuardOutcome:
    """Classify each item's prompt and/or response, chunk by chunk: the prompts are rendered from
    the evalset rows, the responses read from the evaluation's records (``items``, in evalset row
    order), and each record gets its verdicts (``guard_prompt``, ``guard_response``,
    ``guard_response_raw``)."""
    t0 = time.perf_counter()
    guard = load_guard(spec, project_root, spec_path)
    loaded = time.perf_counter() - t0
    size = chunk_rows()
    rows = ((ev.name, row) for ev in evalsets for chunk in ev.batches(size) for row in chunk)
    tally = GuardTally(spec, [ev.name for ev in evalsets])
    classify_s = 0.0
    classifications = 0

    def verdicts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal classify_s, classifications
        conversations: list[list[Turn]] = []
        slots: list[tuple[int, str]] = []
        pairs: list[tuple[str, Any]] = []
        for n, record in enumerate(records):
            pair = next(rows, None)
            if pair is None or (pair[0], pair[1].id) != (record["evalset"], record["id"]):
                raise ValueError(f"the evaluation's records do not match the evalset rows at item {n}")
            pairs.append(pair)
            messages = prompt.render(pair[1].vars)
            for check in spec.check:
                conversations.append(
                    guard_conversation(messages, record["output"] if check == "response" else None)
                )
                slots.append((n, check))
        t1 = time.perf_counter()
        found: list[dict[str, Verdict]] = [{} for _ in records]
        for (n, check), verdict in zip(slots, guard.classify(conversations, progress), strict=True):
            found[n][check] = verdict
        classify_s += time.perf_counter() - t1
        classifications += len(conversations)
        tally.add(
            [
                GuardItem(ev, row.id, f.get("prompt"), f.get("response"), tuple(row.tags))
                for (ev, row), f in zip(pairs, found, strict=True)
            ]
        )
        out = []
        for f in found:
            fields: dict[str, Any] = {}
            if "prompt" in f:
                fields["guard_prompt"] = f["prompt"].label
            if "response" in f:
                fields["guard_response"] = f["response"].label
                fields["guard_response_raw"] = f["response"].raw
            out.append(fields)
        return out

    items.update(size, verdicts)
    if next(rows, None) is not None:
        raise ValueError("the evaluation has fewer records than the evalsets have rows")
    scores, metrics = tally.result(share)
    metrics.update(
        {
            "guard.classifications": float(classifications),
            "guard.load_s": loaded,
            "guard.classify_s": classify_s,
            "guard.s_per_item": classify_s / len(items) if len(items) else 0.0,
        }
    )
    return GuardOutcome(scores, metrics, spec.description, tally.flagged, tally.flagged_count)


def with_guard(evaluation: Evaluation, outcome: GuardOutcome) -> Evaluation:
    """A new Evaluation with the guard's scores, metrics and outcome (its records already carry the
    verdicts: :func:`run_guard` wrote them into the spool)."""
    return dataclasses.replace(
        evaluation,
        scores=evaluation.scores.merged(outcome.scores),
        metrics={**evaluation.metrics, **outcome.metrics},
        guard=outcome,
    )


def guard_summary(outcome: GuardOutcome, limit: int = 20) -> dict[str, Any]:
    """What the report shows: rates, timing, and the first flagged items."""
    rates = {
        k: v
        for k, v in outcome.metrics.items()
        if k.startswith("guard.") and k.count(".") == 1 and k.endswith("_rate")
    }
    flagged = outcome.flagged()
    return {
        "description": outcome.description,
        "rates": rates,
        "classifications": int(outcome.metrics.get("guard.classifications", 0)),
        "s_per_item": outcome.metrics.get("guard.s_per_item"),
        "flagged_count": outcome.flagged_count,
        "flagged": flagged[:limit],
    }
