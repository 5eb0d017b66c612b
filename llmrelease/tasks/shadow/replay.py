"""Shadow comparison: the same recorded production requests, sent to the champion and to the
candidate through vLLM's OpenAI-compatible server, streamed and timed; then distributions compared.

The two sides are never timed together: sent at the same time to one server, their requests are
batched onto the same engine steps, so their first tokens arrive together whatever their prompts
(a TTFT ratio of exactly 1.000 that cannot differ). The sample is cut into consecutive blocks and
each block is replayed by one side alone, then by the other, in ABBA order (block 1 champion
first, block 2 candidate first, ...), so drift on a busy machine and prefix-cache or grammar
warm-up fall on both sides alike. A phase sends as fast as the per-side concurrency allows
(``timing: phases``) or at the recorded inter-arrival times (``timing: recorded``), the same
schedule for both sides. Servers are started here unless the shadow spec points at running
endpoints; champion and candidate share one server when only their prompts differ.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llmrelease.engines.base import Measurement
from llmrelease.engines.openai_server import get_server, request_body, run_async, stream_chat
from llmrelease.specs import ModelSpec, PromptSpec, ShadowSpec, TrafficRecord, content_hash
from llmrelease.tasks.shadow.report import shadow_html
from llmrelease.tasks.shadow.stats import compare_sides, paired, side_metrics
from llmrelease.tasks.shadow.traffic import TrafficSample, read_traffic

if TYPE_CHECKING:
    import httpx

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
        return content_hash({"model_dir": str(model_dir), "engine": self.model.engine.vllm_fields()})


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


MAX_ARRIVAL_GAP_S = 30.0
"""``timing: recorded``: the longest wait between two requests of a phase (a quiet hour in the log
must not stall a release)."""
MAX_BLOCKS = 8
"""More blocks cancel drift better; each phase boundary drains the server, so not too many."""


@dataclass
class Replay:
    measurements: dict[str, list[Measurement]]
    """Per side, in record order (callers pair the sides by request id)."""
    wall_s: float
    """The whole replay, every phase of both sides."""
    side_wall_s: dict[str, float]
    """Per side, its own phases summed: the time it served its requests in (throughput, GPU cost)."""
    note: str
    """How the replay was timed, for the report."""


def _blocks(n: int, concurrency: int) -> list[range]:
    """Consecutive slices of the sample, an even number of them (each side goes first equally often):
    two, or more when every block still holds ``4 * concurrency`` requests (16 at least), so a phase
    spends most of its time at the concurrency limit rather than filling or draining the server."""
    if n < 2:
        return [range(n)] if n else []
    size = max(4 * concurrency, 16)
    count = min(MAX_BLOCKS, max(2, 2 * (n // (2 * size))))
    bounds = [round(i * n / count) for i in range(count + 1)]
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


def _arrival_offsets(records: list[TrafficRecord], time_scale: float) -> list[float]:
    """Seconds after the phase starts at which each record is sent: its recorded gap to the earlier
    records (in time order, the sample need not be), times ``time_scale``, each gap capped."""
    order = sorted(range(len(records)), key=lambda i: records[i].timestamp)
    offsets = [0.0] * len(records)
    for prev, cur in itertools.pairwise(order):
        gap = (records[cur].timestamp - records[prev].timestamp).total_seconds() * time_scale
        offsets[cur] = offsets[prev] + min(gap, MAX_ARRIVAL_GAP_S)
    return offsets


def _timing_note(timing: str, time_scale: float, blocks: int, concurrency: int) -> str:
    arrival = (
        f"recorded arrival times x{time_scale:g} (gaps capped at {MAX_ARRIVAL_GAP_S:g} s), "
        if timing == "recorded"
        else ""
    )
    order = "ABBA" if blocks > 1 else "AB"
    return (
        f"timing: {arrival}alternating phases ({order}, {blocks} block{'s' if blocks != 1 else ''}), "
        f"one side in flight at a time, concurrency {concurrency} per side"
    )


async def _phase(
    client: httpx.AsyncClient,
    side: Side,
    target: tuple[str, str],
    records: list[TrafficRecord],
    offsets: list[float],
    concurrency: int,
    progress: Callable[[int], None] | None,
) -> tuple[list[Measurement], float]:
    """One side alone on one block: each request sent no earlier than its offset (seconds after the
    phase starts), at most ``concurrency`` in flight. ``target``: (base URL, served model name).
    Returns the measurements in record order and the phase's wall time."""
    url, name = target
    limit = asyncio.Semaphore(concurrency)
    start = time.perf_counter()

    async def one(rec: TrafficRecord, offset: float) -> Measurement:
        try:
            messages = side.messages(rec)
        except KeyError as exc:  # this side's template needs a variable the request lacks
            if progress is not None:
                progress(1)
            return Measurement(str(rec.id), "", None, 0.0, 0, 0, 0, f"missing template variable {exc}")
        body = request_body(name, messages, side.model.sampling, side.model.response_schema)
        if offset > 0:
            await asyncio.sleep(start + offset - time.perf_counter())
        async with limit:
            m = await stream_chat(client, url, str(rec.id), body)
        if progress is not None:
            progress(1)
        return m

    results = await asyncio.gather(*(one(r, o) for r, o in zip(records, offsets, strict=True)))
    return list(results), time.perf_counter() - start


async def _replay(
    records: list[TrafficRecord],
    sides: list[Side],
    urls: dict[str, str],
    names: dict[str, str],
    concurrency: int,
    progress: Callable[[int], None] | None,
    *,
    timing: Literal["phases", "recorded"] = "phases",
    time_scale: float = 1.0,
) -> Replay:
    """Every record once per side, in alternating one-side phases (see the module docstring)."""
    import httpx

    blocks = _blocks(len(records), concurrency)
    got: dict[str, list[Measurement]] = {s.name: [] for s in sides}  # blocks run in record order
    side_wall = {s.name: 0.0 for s in sides}
    timeout = httpx.Timeout(600.0, connect=10.0)
    async with httpx.AsyncClient(
        timeout=timeout, limits=httpx.Limits(max_connections=concurrency + 4)
    ) as client:
        t0 = time.perf_counter()
        for b, block in enumerate(blocks):
            batch = [records[i] for i in block]
            offsets = _arrival_offsets(batch, time_scale) if timing == "recorded" else [0.0] * len(batch)
            for side in sides if b % 2 == 0 else sides[::-1]:  # ABBA: neither side always goes first
                target = (urls[side.name], names[side.name])
                ms, wall = await _phase(client, side, target, batch, offsets, concurrency, progress)
                got[side.name].extend(ms)
                side_wall[side.name] += wall
        wall = time.perf_counter() - t0
    return Replay(
        got,
        wall,
        side_wall,
        _timing_note(timing, time_scale, len(blocks), concurrency),
    )


def _rouge(pairs: list[tuple[str, str]]) -> list[float]:
    from llmrelease.scorers import local_metric

    if not pairs:
        return []
    res = local_metric("rouge_l").compute(predictions=[b for _, b in pairs], references=[a for a, _ in pairs])
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
    replay: Replay = run_async(
        _replay(
            sample.records,
            sides,
            urls,
            names,
            shadow.concurrency,
            progress,
            timing=shadow.timing,
            time_scale=shadow.time_scale,
        )
    )
    notes.append(replay.note)
    measurements = replay.measurements
    metrics: dict[str, float] = {}
    for side in sides:  # throughput and GPU cost over the side's own phases, not the other side's
        side_wall = replay.side_wall_s[side.name]
        metrics.update(side_metrics(side.name, measurements[side.name], side.model.pricing, side_wall))
        metrics[f"{side.name}.wall_s"] = side_wall
    pairs = paired(measurements["champion"], measurements["candidate"])
    rouge = _rouge([(a.text, b.text) for a, b in pairs])
    metrics.update(compare_sides(measurements["champion"], measurements["candidate"], metrics, rouge))
    for side in sides:  # structured output holds on production inputs too?
        if side.model.response_schema is not None:
            from llmrelease.tasks.evaluation.scoring import structured_output_scores

            ok = [m for m in measurements[side.name] if m.error is None]
            rates = structured_output_scores(
                side.name, [m.id for m in ok], [m.text for m in ok], side.model.response_schema
            ).aggregates
            metrics[f"{side.name}.json_parses_rate"] = rates.get(f"{side.name}.json_parses", 0.0)
            metrics[f"{side.name}.schema_conforms_rate"] = rates.get(f"{side.name}.schema_conforms", 0.0)
    metrics["shadow.wall_s"] = replay.wall_s
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
    from llmrelease.tasks.guard.prompt import guard_conversation

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


def shadow_summary(result: ShadowResult) -> dict[str, Any]:
    """The headline numbers for the terminal report and --json."""
    keys = (
        "champion.ttft_p50_s", "candidate.ttft_p50_s", "champion.ttft_p95_s", "candidate.ttft_p95_s",
        "champion.tpot_p50_s", "candidate.tpot_p50_s", "champion.tpot_p95_s", "candidate.tpot_p95_s",
        "champion.prefix_cache_hit_rate", "candidate.prefix_cache_hit_rate",
        "champion.cost_per_1k_requests", "candidate.cost_per_1k_requests",
        "champion.prefix_cache_saving_per_1k", "candidate.prefix_cache_saving_per_1k",
        "shadow.agreement_exact", "shadow.agreement_rouge_l", "shadow.length_ks_pvalue",
        "champion.error_rate", "candidate.error_rate",
        "champion.schema_conforms_rate", "candidate.schema_conforms_rate",
        "champion.guard_response_unsafe_rate", "candidate.guard_response_unsafe_rate",
        "traffic.guard_prompt_unsafe_rate",
    )  # fmt: skip
    return {
        "requests": len(result.sample.records),
        "notes": result.notes,
        "metrics": {k: result.metrics[k] for k in keys if k in result.metrics},
    }
