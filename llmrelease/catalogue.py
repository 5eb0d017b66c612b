"""The metric catalogue: every metric a release can produce, declared by the step that produces it.

Gates, load-time validation, the nightly check and reports ask the catalogue what a metric means
(which direction is better, whether it has per-item scores, its unit) instead of reading it from
the name. A scorer called ``guard_refusal`` is a quality score unless its card says otherwise, and
an evalset called ``shadow`` cannot pass for the shadow comparison's aggregates: names that would
collide are refused when the app loads.

Pure: specs in, definitions out. Each producer has one function below; adding a producer (a new
step that emits metrics) means adding one function and calling it from :func:`app_catalogue`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from llmrelease.specs import BUILTIN_ITEM_SCORES, EvalsetCard, GuardSpec, Scorer

if TYPE_CHECKING:
    from llmrelease.project import AppSpec

__all__ = [
    "Direction",
    "MetricDef",
    "MetricCatalogue",
    "MetricCollision",
    "RESERVED_NAMESPACES",
    "BUILTIN_ITEM_SCORES",
    "SHADOW_METRICS",
    "scorer_direction",
    "scorer_metrics",
    "structured_output_metrics",
    "guard_metrics",
    "shadow_metrics",
    "serving_metrics",
    "SERVING_METRICS",
    "COST_METRICS",
    "app_catalogue",
]

Direction = Literal["higher", "lower"]

RESERVED_NAMESPACES = frozenset(
    {
        "shadow",
        "champion",
        "candidate",
        "traffic",
        "serving",
        "cost",
        "guard",
        "engine",
        "gates",
        "router",
        "routes",
        "random",
    }
)
"""First name parts that belong to aggregate producers: an evalset may not be called one of these."""

SHADOW_METRICS: dict[str, tuple[Direction, str, str]] = {
    "shadow.ttft_p50_ratio": ("lower", "ratio", "p50 time to first token, candidate / champion"),
    "shadow.ttft_p95_ratio": ("lower", "ratio", "p95 time to first token, candidate / champion"),
    "shadow.tpot_p50_ratio": ("lower", "ratio", "p50 time per output token, candidate / champion"),
    "shadow.tpot_p95_ratio": ("lower", "ratio", "p95 time per output token, candidate / champion"),
    "shadow.latency_p95_ratio": ("lower", "ratio", "p95 request latency, candidate / champion"),
    "shadow.cost_per_1k_requests_ratio": ("lower", "ratio", "cost per 1,000 requests, candidate / champion"),
    "shadow.agreement_exact": ("higher", "rate", "share of requests with the same output on both sides"),
    "shadow.agreement_rouge_l": ("higher", "score", "mean ROUGE-L F1 between the two sides' outputs"),
    "shadow.length_ks_statistic": ("lower", "score", "KS statistic of the output-length distributions"),
    "shadow.length_ks_pvalue": ("higher", "p-value", "KS p-value: low means the lengths differ"),
    "champion.error_rate": ("lower", "rate", "share of replayed requests the champion failed"),
    "candidate.error_rate": ("lower", "rate", "share of replayed requests the candidate failed"),
    "candidate.json_parses_rate": ("higher", "rate", "share of replayed answers that parse as JSON"),
    "candidate.schema_conforms_rate": ("higher", "rate", "share of replayed answers matching the schema"),
    "candidate.guard_response_unsafe_rate": ("lower", "rate", "share of replayed answers the guard flags"),
}
"""Aggregates of the shadow comparison that gates may name (``min``/``max`` only: no per-item scores).
Ratios are candidate / champion, so ``max: 1.10`` on a ratio means 'at most 10% worse'."""


SERVING_METRICS: dict[str, tuple[Direction, str, str]] = {
    "serving.tokens_per_s": ("higher", "tokens/s", "output tokens per second over the whole evaluation"),
    "serving.latency_p50_s": ("lower", "s", "p50 item latency in the batch (queueing included)"),
    "serving.latency_p95_s": ("lower", "s", "p95 item latency in the batch (queueing included)"),
    "serving.ttft_p50_s": ("lower", "s", "p50 time to first token in the batch"),
    "serving.ttft_p95_s": ("lower", "s", "p95 time to first token in the batch"),
    "serving.tpot_p50_s": ("lower", "s", "p50 time per output token after the first"),
    "serving.tpot_p95_s": ("lower", "s", "p95 time per output token after the first"),
    "serving.mean_output_tokens": ("lower", "tokens", "mean output tokens per item"),
    "serving.truncated_rate": ("lower", "rate", "share of answers cut off at max_tokens"),
}
"""Aggregates of the evaluation's own generation (absolute ``min``/``max`` gates). Measured on the
release's hardware: gate on them only where that hardware is fixed."""

COST_METRICS: dict[str, tuple[Direction, str, str]] = {
    "cost.per_1k_requests": ("lower", "currency", "cost of 1,000 evalset requests at the model's pricing"),
}


class MetricCollision(ValueError):
    """Two producers declare the same metric name."""


@dataclass(frozen=True)
class MetricDef:
    """What one metric means."""

    name: str
    direction: Direction
    """Which way is better: a regression is a drop for ``higher``, a rise for ``lower``."""
    per_item: bool
    """True: one score per evalset item (paired comparisons are possible); False: an aggregate."""
    unit: str
    """``rate`` or ``score`` in [0, 1], ``ratio``, ``p-value``, ``s``, ``tokens/s``, ``currency``."""
    producer: str
    """The step that emits it: ``scorer:<kind>``, ``structured_output``, ``guard``, ``shadow``."""
    description: str = ""


def scorer_direction(scorer: Scorer) -> Direction:
    """The card's declared direction, else the kind's (``llmrelease.scorers``)."""
    from llmrelease.scorers import get_scorer_kind

    return scorer.direction or get_scorer_kind(scorer.kind).direction


def scorer_metrics(evalset: str, card: EvalsetCard) -> Iterator[MetricDef]:
    for s in card.scorers:
        what = f"{s.kind}" + (f" on field '{s.field}'" if s.field else "")
        yield MetricDef(
            f"{evalset}.{s.name}", scorer_direction(s), True, "score", f"scorer:{s.kind}", f"{what}, per item"
        )


def structured_output_metrics(evalset: str) -> Iterator[MetricDef]:
    yield MetricDef(
        f"{evalset}.json_parses", "higher", True, "rate", "structured_output", "output parses as JSON"
    )
    yield MetricDef(
        f"{evalset}.schema_conforms", "higher", True, "rate", "structured_output", "output matches the schema"
    )


def guard_metrics(evalset: str, guard: GuardSpec) -> Iterator[MetricDef]:
    for check in guard.check:
        base = f"{evalset}.guard_{check}_unsafe"
        yield MetricDef(base, "lower", True, "rate", "guard", f"the guard judged the {check} unsafe")
        for cat in guard.categories:
            yield MetricDef(
                f"{base}.{cat.code}",
                "lower",
                True,
                "rate",
                "guard",
                f"{check} unsafe in {cat.code} {cat.name}",
            )
    yield MetricDef(
        f"{evalset}.guard_unparsed", "lower", True, "rate", "guard", "verdict could not be parsed"
    )


def _aggregates(table: dict[str, tuple[Direction, str, str]], producer: str) -> Iterator[MetricDef]:
    for name, (direction, unit, description) in table.items():
        yield MetricDef(name, direction, False, unit, producer, description)


def serving_metrics(priced: bool) -> Iterator[MetricDef]:
    yield from _aggregates(SERVING_METRICS, "serving")
    if priced:
        yield from _aggregates(COST_METRICS, "cost")


def shadow_metrics() -> Iterator[MetricDef]:
    yield from _aggregates(SHADOW_METRICS, "shadow")


class MetricCatalogue(Mapping[str, MetricDef]):
    """Metric name -> definition; built once per app from its specs."""

    def __init__(self, defs: Iterable[MetricDef]) -> None:
        self._defs: dict[str, MetricDef] = {}
        for d in defs:
            if d.name in self._defs:
                first = self._defs[d.name]
                raise MetricCollision(
                    f"metric '{d.name}' is declared twice: by {first.producer} and by {d.producer}"
                )
            self._defs[d.name] = d

    def __getitem__(self, name: str) -> MetricDef:
        return self._defs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._defs)

    def __len__(self) -> int:
        return len(self._defs)

    def per_item(self, name: str) -> bool:
        d = self._defs.get(name)
        return d is not None and d.per_item



def app_catalogue(app: AppSpec) -> MetricCatalogue:
    """Every metric this app's release can produce, each declared by its producer."""
    defs: list[MetricDef] = []
    for ev in app.evalsets:
        defs += scorer_metrics(ev.name, ev.card)
        if app.model.response_schema is not None:
            defs += structured_output_metrics(ev.name)
        if app.guard is not None:
            defs += guard_metrics(ev.name, app.guard)
    defs += serving_metrics(priced=app.model.pricing is not None)
    if app.shadow is not None:
        defs += shadow_metrics()
    return MetricCatalogue(defs)
