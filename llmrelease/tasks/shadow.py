"""Shadow comparison: the same recorded production requests, sent to the champion and to the
candidate through vLLM's OpenAI-compatible server, streamed and timed; then distributions compared.

Each request goes to both sides at the same time (per-side concurrency limit), the way a shadow
deployment mirrors traffic. Servers are started here unless the shadow spec points at running
endpoints; champion and candidate share one server when only their prompts differ.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmrelease.engines.openai_server import get_server, request_body, run_async, stream_chat
from llmrelease.specs import ModelSpec, PromptSpec, ShadowSpec, TrafficRecord, content_hash
from llmrelease.tasks.shadow_report import shadow_html
from llmrelease.tasks.shadow_stats import Measurement, compare_sides, paired, side_metrics
from llmrelease.tasks.traffic import TrafficSample, read_traffic

__all__ = ["Side", "ShadowResult", "run_shadow"]

SIDES = ("champion", "candidate")


@dataclass(frozen=True)
class Side:
    name: str
    """``champion`` or ``candidate``."""
    version: str
    model: ModelSpec
    prompt: PromptSpec
    url: str | None = None
    """A running OpenAI-compatible endpoint; None: start a server."""

    def messages(self, record: TrafficRecord) -> list[dict[str, str]]:
        if record.vars is not None:
            return self.prompt.render(record.vars)
        return [m.model_dump() for m in record.messages or []]

    def server_key(self, model_dir: Path) -> str:
        """Sides with the same weights and engine arguments can share one server."""
        return content_hash(
            {"model_dir": str(model_dir), "engine": self.model.engine.model_dump(mode="json")}
        )


@dataclass
class ShadowResult:
    sample: TrafficSample
    measurements: dict[str, list[Measurement]]
    metrics: dict[str, float]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def html(self, title: str, gates: list[dict[str, Any]] | None = None, currency: str = "USD") -> str:
        return shadow_html(
            title, self.measurements, self.metrics, notes=self.notes, gates=gates, currency=currency
        )


async def _replay(
    records: list[TrafficRecord],
    sides: list[Side],
    urls: dict[str, str],
    names: dict[str, str],
    concurrency: int,
    progress: Callable[[int], None] | None,
) -> tuple[dict[str, list[Measurement]], float]:
    import httpx

    limits = {s.name: asyncio.Semaphore(concurrency) for s in sides}
    timeout = httpx.Timeout(600.0, connect=10.0)
    async with httpx.AsyncClient(
        timeout=timeout, limits=httpx.Limits(max_connections=2 * concurrency + 4)
    ) as client:

        async def one(side: Side, rec: TrafficRecord) -> Measurement:
            try:
                messages = side.messages(rec)
            except KeyError as exc:  # this side's template needs a variable the request lacks
                if progress is not None:
                    progress(1)
                return Measurement(str(rec.id), "", None, 0.0, 0, 0, 0, f"missing template variable {exc}")
            body = request_body(names[side.name], messages, side.model.sampling, side.model.response_schema)
            async with limits[side.name]:
                m = await stream_chat(client, urls[side.name], str(rec.id), body)
            if progress is not None:
                progress(1)
            return m

        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(side, rec) for rec in records for side in sides))
        wall = time.perf_counter() - t0
    out: dict[str, list[Measurement]] = {s.name: [] for s in sides}
    for i, m in enumerate(results):
        out[sides[i % len(sides)].name].append(m)
    return out, wall


def _rouge(pairs: list[tuple[str, str]]) -> list[float]:
    from llmrelease.tasks.scoring import _metric

    if not pairs:
        return []
    res = _metric("rouge_l").compute(predictions=[b for _, b in pairs], references=[a for a, _ in pairs])
    return [float(x) for x in res["per_item"]]


def run_shadow(
    shadow: ShadowSpec,
    app: str,
    champion: Side,
    candidate: Side,
    *,
    project_root: Path,
    sample: TrafficSample | None = None,
    progress: Callable[[int], None] | None = None,
) -> ShadowResult:
    """Bring up what is not running, replay the sample (read here when not given), measure, compare."""
    from llmrelease.engines.model_source import resolve_model_dir

    if sample is None:
        sample = read_traffic(
            shadow.traffic, app, project_root=project_root, variables=candidate.prompt.variables
        )
    sides = [champion, candidate]
    urls: dict[str, str] = {}
    names: dict[str, str] = {}
    notes = [
        f"{len(sample.records)} requests sampled ({shadow.traffic.sample}) from {sample.matched} for app "
        f"'{app}' in {shadow.traffic.source}"
        + (f"; {len(sample.skipped)} bad lines skipped" if sample.skipped else "")
    ]
    for side in sides:
        url = side.url or (shadow.champion_url if side.name == "champion" else shadow.candidate_url)
        if url:
            urls[side.name], names[side.name] = url, side.model.version
            notes.append(f"{side.name}: endpoint {url}")
            continue
        model_dir = resolve_model_dir(side.model.source, project_root=project_root)
        server, running = get_server(
            side.server_key(model_dir),
            model_dir,
            side.model.engine,
            name=app,
            prefix_caching=shadow.prefix_caching,
            timeout_s=shadow.startup_timeout_s,
        )
        if server.base_url in urls.values():
            notes.append(f"{side.name}: the same server as the champion (same model and engine)")
        elif running:
            notes.append(f"{side.name}: vLLM OpenAI server already running in this process")
        else:
            notes.append(f"{side.name}: started a vLLM OpenAI server in {server.startup_s:.0f}s")
        urls[side.name], names[side.name] = server.base_url, server.name
    measurements, wall = run_async(_replay(sample.records, sides, urls, names, shadow.concurrency, progress))
    metrics: dict[str, float] = {}
    for side in sides:
        metrics.update(side_metrics(side.name, measurements[side.name], side.model.pricing, wall))
    pairs = paired(measurements["champion"], measurements["candidate"])
    rouge = _rouge([(a.text, b.text) for a, b in pairs])
    metrics.update(compare_sides(measurements["champion"], measurements["candidate"], metrics, rouge))
    for side in sides:  # structured output holds on production inputs too?
        if side.model.response_schema is not None:
            from llmrelease.tasks.scoring import structured_output_scores

            ok = [m for m in measurements[side.name] if m.error is None]
            rates = structured_output_scores(
                side.name, [m.id for m in ok], [m.text for m in ok], side.model.response_schema
            ).aggregates
            metrics[f"{side.name}.json_parses_rate"] = rates.get(f"{side.name}.json_parses", 0.0)
            metrics[f"{side.name}.schema_conforms_rate"] = rates.get(f"{side.name}.schema_conforms", 0.0)
    metrics["shadow.wall_s"] = wall
    metrics["shadow.requests"] = float(len(sample.records))
    rows = []
    by_id = {m.id: m for m in measurements["champion"]}
    cand_by_id = {m.id: m for m in measurements["candidate"]}
    for rec in sample.records:
        a, b = by_id[str(rec.id)], cand_by_id[str(rec.id)]
        rows.append(
            {
                "id": rec.id,
                "timestamp": rec.timestamp.isoformat(),
                "champion_output": a.text,
                "candidate_output": b.text,
                "same_output": a.text.strip() == b.text.strip(),
                "champion_ttft_s": a.ttft_s,
                "candidate_ttft_s": b.ttft_s,
                "champion_latency_s": a.latency_s,
                "candidate_latency_s": b.latency_s,
                "champion_output_tokens": a.output_tokens,
                "candidate_output_tokens": b.output_tokens,
                "champion_streamed_chunks": a.chunks,
                "candidate_streamed_chunks": b.chunks,
                "champion_prompt_tokens": a.prompt_tokens,
                "candidate_prompt_tokens": b.prompt_tokens,
                "champion_cached_tokens": a.cached_tokens,
                "candidate_cached_tokens": b.cached_tokens,
                "recorded_output": rec.champion.output if rec.champion else None,
                "errors": "; ".join(e for e in (a.error, b.error) if e) or None,
            }
        )
    return ShadowResult(sample, measurements, metrics, rows, notes)


def guard_shadow(
    result: ShadowResult,
    champion: Side,
    candidate: Side,
    classify: Callable[[list[list[dict[str, str]]]], list[Any]],
) -> None:
    """The app's guard on the replayed production traffic: how often real inputs are unsafe
    (``traffic.guard_prompt_unsafe_rate``) and how often each side answers unsafely
    (``<side>.guard_response_unsafe_rate``; unparsed verdicts count as unsafe)."""
    from llmrelease.guard.prompt import guard_conversation

    records = {str(r.id): r for r in result.sample.records}
    convs: list[list[dict[str, str]]] = []
    slots: list[tuple[str, str]] = []
    for rec in result.sample.records:
        convs.append(guard_conversation(candidate.messages(rec)))
        slots.append(("traffic", str(rec.id)))
    for side in (champion, candidate):
        for m in result.measurements[side.name]:
            if m.error is None:
                convs.append(guard_conversation(side.messages(records[m.id]), m.text))
                slots.append((side.name, m.id))
    verdicts = classify(convs)
    unsafe: dict[str, list[float]] = {"traffic": [], "champion": [], "candidate": []}
    labels: dict[tuple[str, str], str] = {}
    for (who, rid), v in zip(slots, verdicts, strict=True):
        unsafe[who].append(float(v.unsafe))
        labels[(who, rid)] = v.label
    result.metrics["traffic.guard_prompt_unsafe_rate"] = sum(unsafe["traffic"]) / max(
        len(unsafe["traffic"]), 1
    )
    for side in ("champion", "candidate"):
        if unsafe[side]:
            result.metrics[f"{side}.guard_response_unsafe_rate"] = sum(unsafe[side]) / len(unsafe[side])
    for row in result.rows:
        rid = str(row["id"])
        row["guard_prompt"] = labels.get(("traffic", rid))
        row["champion_guard"] = labels.get(("champion", rid))
        row["candidate_guard"] = labels.get(("candidate", rid))
