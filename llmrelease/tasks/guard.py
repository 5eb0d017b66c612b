"""The guard step: classify every item's prompt and response with the app's guard, fail closed.

Per item: a verdict for the prompt and one for the response (safe, unsafe with categories, or
unparsed, which counts as unsafe). Per evalset: unsafe rates overall and per category, as per-item
0/1 scores, so the same gates (absolute, or paired against the champion) apply to them. Per run:
the same rates over all items, timing, and the flagged items for the report.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmrelease.engines.base import Progress
from llmrelease.guard.prompt import Turn, guard_conversation, render_guard_input
from llmrelease.guard.verdict import Verdict, parse_verdict
from llmrelease.specs import GuardSpec, PromptSpec, content_hash
from llmrelease.tasks.evalsets import Evalset
from llmrelease.tasks.scoring import Scores

__all__ = ["GuardClassifier", "GuardItem", "GuardOutcome", "load_guard", "run_guard", "verdict_regex"]

_MEMO_MAX = 200_000


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
            from llmrelease.guard.transformers_backend import TransformersGuard

            self._hf = TransformersGuard(
                model_dir,
                device=spec.device,
                dtype=spec.dtype,
                batch_size=spec.batch_size,
                max_new_tokens=spec.max_new_tokens,
                constrain_codes=spec.codes if spec.constrain_verdict else None,
            )
            self.tokenizer = self._hf.tokenizer
        self._memo: dict[str, str] = {}

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
        # Greedy classification of the same text gives the same answer: classify each distinct text
        # once, and remember answers for this process (a warm worker does not re-classify the
        # champion's prompts, or the same tickets release after release).
        todo = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if progress is not None and len(texts) > len(todo):
            progress(len(texts) - len(todo))
        for text, answer in zip(todo, self.raw_answers(todo, progress) if todo else [], strict=True):
            self._memo[text] = answer
        while len(self._memo) > _MEMO_MAX:
            self._memo.pop(next(iter(self._memo)))
        codes = self.spec.codes
        return [parse_verdict(self._memo[t], codes) for t in texts]


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
    items: list[GuardItem]
    scores: Scores
    metrics: dict[str, float]
    description: str = ""

    def flagged(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Flagged items, responses first: what a reviewer reads in the report."""
        out = []
        for it in self.items:
            if not it.flagged():
                continue
            out.append(
                {
                    "evalset": it.evalset,
                    "id": it.id,
                    "prompt": it.prompt.label if it.prompt else None,
                    "response": it.response.label if it.response else None,
                    "tags": list(it.tags),
                }
            )
        out.sort(key=lambda r: (r["response"] in (None, "safe"), r["evalset"], r["id"]))
        return out if limit is None else out[:limit]


def _rate(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarise(
    spec: GuardSpec, items: list[GuardItem], evalset_names: list[str]
) -> tuple[Scores, dict[str, float]]:
    """Per-item 0/1 scores per evalset (``<evalset>.guard_<check>_unsafe[.<code>]``,
    ``<evalset>.guard_unparsed``) and run-level rates (``guard.<check>_unsafe_rate[.<code>]``)."""
    scores = Scores()
    metrics: dict[str, float] = {}
    by_set: dict[str, list[GuardItem]] = {name: [] for name in evalset_names}
    for it in items:
        by_set.setdefault(it.evalset, []).append(it)

    def fill(prefix: str, group: list[GuardItem], per_item: bool) -> None:
        # Item ids are unique within an evalset only: run-level rates count values, not ids.
        for check in spec.check:
            verdicts = [getattr(it, check) for it in group]
            base = f"{prefix}guard_{check}_unsafe" if per_item else f"guard.{check}_unsafe_rate"
            series = [float(v.unsafe) for v in verdicts]
            if per_item:
                scores.items[base] = dict(zip((it.id for it in group), series, strict=True))
            metrics[base] = _rate(series)
            for code in spec.codes:
                cat = [float(code in v.categories) for v in verdicts]
                if per_item:
                    scores.items[f"{base}.{code}"] = dict(zip((it.id for it in group), cat, strict=True))
                metrics[f"{base}.{code}"] = _rate(cat)
        unparsed = [
            float(any(v is not None and not v.parsed for v in (it.prompt, it.response))) for it in group
        ]
        name = f"{prefix}guard_unparsed" if per_item else "guard.unparsed_rate"
        if per_item:
            scores.items[name] = dict(zip((it.id for it in group), unparsed, strict=True))
        metrics[name] = _rate(unparsed)

    for name, group in by_set.items():
        fill(f"{name}.", group, per_item=True)
    fill("", items, per_item=False)
    scores.aggregates = {k: v for k, v in metrics.items() if k in scores.items}
    return scores, metrics


def run_guard(
    spec: GuardSpec,
    prompt: PromptSpec,
    evalsets: list[Evalset],
    outputs: list[str],
    *,
    project_root: Path,
    spec_path: Path | None = None,
    progress: Progress | None = None,
) -> GuardOutcome:
    """Classify each item's prompt and/or response (``outputs`` in evalset row order)."""
    t0 = time.perf_counter()
    guard = load_guard(spec, project_root, spec_path)
    loaded = time.perf_counter() - t0
    rows = [(ev.name, row) for ev in evalsets for row in ev.rows]
    if len(rows) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs for {len(rows)} evalset rows")
    conversations: list[list[Turn]] = []
    slots: list[tuple[int, str]] = []
    for n, ((_, row), output) in enumerate(zip(rows, outputs, strict=True)):
        messages = prompt.render(row.vars)
        for check in spec.check:
            conversations.append(guard_conversation(messages, output if check == "response" else None))
            slots.append((n, check))
    t1 = time.perf_counter()
    verdicts = guard.classify(conversations, progress)
    classify_s = time.perf_counter() - t1
    found: list[dict[str, Verdict]] = [{} for _ in rows]
    for (n, check), verdict in zip(slots, verdicts, strict=True):
        found[n][check] = verdict
    items = [
        GuardItem(ev, row.id, found[n].get("prompt"), found[n].get("response"), tuple(row.tags))
        for n, (ev, row) in enumerate(rows)
    ]
    scores, metrics = summarise(spec, items, [ev.name for ev in evalsets])
    metrics.update(
        {
            "guard.classifications": float(len(conversations)),
            "guard.load_s": loaded,
            "guard.classify_s": classify_s,
            "guard.s_per_item": classify_s / len(rows) if rows else 0.0,
        }
    )
    return GuardOutcome(items, scores, metrics, spec.description)


def apply_guard(evaluation: Any, outcome: GuardOutcome) -> None:
    """Fold the guard's scores, metrics and per-item verdicts into an Evaluation (rows are in the
    same evalset-row order as the guard's items)."""
    evaluation.scores.merge(outcome.scores)
    evaluation.metrics.update(outcome.metrics)
    for record, item in zip(evaluation.rows, outcome.items, strict=True):
        if item.prompt is not None:
            record["guard_prompt"] = item.prompt.label
        if item.response is not None:
            record["guard_response"] = item.response.label
            record["guard_response_raw"] = item.response.raw
    evaluation.guard = outcome


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
        "flagged_count": len(flagged),
        "flagged": flagged[:limit],
    }
