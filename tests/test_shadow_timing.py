"""Shadow replay timing, without a server: champion and candidate are never in flight together (one
vLLM server batches co-sent requests onto the same engine steps, so their times could not differ),
phases alternate ABBA, and ``timing: recorded`` keeps the recorded arrival schedule."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from llmrelease.engines.base import Measurement
from llmrelease.errors import SpecError
from llmrelease.specfile import load_spec
from llmrelease.specs import ModelSpec, PromptSpec, ShadowSpec, TrafficRecord
from llmrelease.tasks.shadow import replay as shadow
from llmrelease.tasks.shadow.traffic import TrafficSample

URLS = {"champion": "http://champion.test/v1", "candidate": "http://candidate.test/v1"}
NAMES = {"champion": "champion-model", "candidate": "candidate-model"}
T0 = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)


@dataclass
class FakeServer:
    """Stands in for ``stream_chat``: which side sent which request when, and who else was in flight."""

    sends: list[tuple[str, str, float]] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=lambda: {"champion": 0, "candidate": 0})
    overlaps: list[tuple[str, str]] = field(default_factory=list)

    async def __call__(
        self, client: Any, base_url: str, request_id: str, body: dict[str, Any], **_: Any
    ) -> Measurement:
        side = next(name for name, url in URLS.items() if url == base_url)
        assert body["model"] == NAMES[side]
        self.sends.append((side, request_id, time.perf_counter()))
        self.in_flight[side] += 1
        if any(n for other, n in self.in_flight.items() if other != side):
            self.overlaps.append((side, request_id))
        try:
            await asyncio.sleep(0.001)
        finally:
            self.in_flight[side] -= 1
        return Measurement(request_id, f"{side} {request_id}", 0.001, 0.001, 3, 0, 2, chunks=2)

    def first_sender(self) -> dict[str, str]:
        """Record id -> the side whose request for it went out first."""
        first: dict[str, str] = {}
        for side, rid, _ in self.sends:
            first.setdefault(rid, side)
        return first


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer()
    monkeypatch.setattr(shadow, "stream_chat", fake)
    return fake


def sides() -> list[shadow.Side]:
    prompt = PromptSpec(version="p", messages=[{"role": "user", "content": "{{ q }}"}])
    return [
        shadow.Side(
            name,
            "1",
            ModelSpec(
                version=NAMES[name],
                source={"hf_dir": "/m"},
                sampling={"temperature": 0, "max_tokens": 8},
                pricing={"input_per_mtok": 1.0, "output_per_mtok": 2.0},
            ),
            prompt,
        )
        for name in ("champion", "candidate")
    ]


def records(n: int, gap_s: float = 1.0) -> list[TrafficRecord]:
    return [
        TrafficRecord(id=f"r{i}", timestamp=T0 + timedelta(seconds=i * gap_s), app="a", vars={"q": f"q{i}"})
        for i in range(n)
    ]


def replay(recs: list[TrafficRecord], concurrency: int = 2, **timing: Any) -> Any:
    return asyncio.run(shadow._replay(recs, sides(), URLS, NAMES, concurrency, None, **timing))


def test_sides_are_never_in_flight_together(server: FakeServer) -> None:
    replay(records(8), concurrency=4)
    assert len(server.sends) == 16
    assert server.overlaps == []


def test_every_record_is_sent_once_per_side_and_results_keep_record_order(server: FakeServer) -> None:
    recs = records(7)
    result = replay(recs, concurrency=3)
    ids = [str(r.id) for r in recs]
    for side in ("champion", "candidate"):
        assert sorted(rid for s, rid, _ in server.sends if s == side) == sorted(ids)
        assert [m.id for m in result.measurements[side]] == ids
        assert [m.text for m in result.measurements[side]] == [f"{side} {rid}" for rid in ids]


def test_phases_alternate_abba(server: FakeServer) -> None:
    replay(records(8))
    first = server.first_sender()
    # Two blocks of four: block 1 champion then candidate, block 2 candidate then champion.
    assert [first[f"r{i}"] for i in range(8)] == ["champion"] * 4 + ["candidate"] * 4
    phases = [side for i, (side, _, _) in enumerate(server.sends) if i == 0 or server.sends[i - 1][0] != side]
    assert phases == ["champion", "candidate", "champion"]  # A B | B A: the two B phases are adjacent


def test_each_side_has_its_own_phase_wall_time(server: FakeServer) -> None:
    result = replay(records(8))
    walls = result.side_wall_s
    assert walls["champion"] > 0 and walls["candidate"] > 0
    assert walls["champion"] + walls["candidate"] <= result.wall_s


def test_recorded_timing_sends_no_earlier_than_the_scaled_offsets(server: FakeServer) -> None:
    recs = records(6, gap_s=0.02)
    stamp = {str(r.id): r.timestamp for r in recs}
    replay(recs, concurrency=8, timing="recorded", time_scale=2.0)
    phases: dict[tuple[str, int], list[tuple[str, float]]] = {}
    for side, rid, at in server.sends:  # two blocks of three: r0-r2, r3-r5
        phases.setdefault((side, int(rid[1:]) // 3), []).append((rid, at))
    assert len(phases) == 4
    for (_, block), sends in phases.items():
        first = stamp[f"r{3 * block}"]
        start = min(at for _, at in sends)
        for rid, at in sends:
            offset = (stamp[rid] - first).total_seconds() * 2.0
            assert at - start >= offset - 0.005, (rid, at - start, offset)  # a lower bound only
    assert server.first_sender()["r5"] == "candidate"


def test_recorded_offsets_are_scaled_sorted_and_capped() -> None:
    recs = [
        TrafficRecord(id=str(i), timestamp=T0 + timedelta(seconds=s), app="a", vars={"q": "x"})
        for i, s in enumerate([10.0, 0.0, 100.0, 20.0])
    ]
    # Gaps in time order: 10, 10, 80 s; x0.5 -> 5, 5, 40 -> capped at 30.
    assert shadow._arrival_offsets(recs, 0.5) == pytest.approx([5.0, 0.0, 40.0, 10.0])


def test_a_missing_template_variable_is_an_error_not_a_request(server: FakeServer) -> None:
    recs = records(2) + [TrafficRecord(id="bad", timestamp=T0, app="a", vars={"other": "x"})]
    result = replay(recs)
    assert {rid for _, rid, _ in server.sends} == {"r0", "r1"}
    assert [m.error is not None for m in result.measurements["candidate"]] == [False, False, True]


@pytest.mark.parametrize(
    ("timing", "time_scale", "expected"),
    [
        (
            "phases",
            1.0,
            "timing: alternating phases (ABBA, 2 blocks), one side in flight at a time, "
            "concurrency 2 per side",
        ),
        (
            "recorded",
            0.5,
            "timing: recorded arrival times x0.5 (gaps capped at 30 s), alternating phases "
            "(ABBA, 2 blocks), one side in flight at a time, concurrency 2 per side",
        ),
    ],
)
def test_the_notes_name_the_timing(
    server: FakeServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    timing: str,
    time_scale: float,
    expected: str,
) -> None:
    monkeypatch.setattr(shadow, "_rouge", lambda pairs: [1.0] * len(pairs))
    spec = ShadowSpec(
        version="s",
        traffic={"source": "x.jsonl"},
        concurrency=2,
        champion_url=URLS["champion"],
        candidate_url=URLS["candidate"],
        timing=timing,
        **({"time_scale": time_scale} if timing == "recorded" else {}),
    )
    recs = records(6, gap_s=0.001)
    champion, candidate = sides()
    result = shadow.run_shadow(
        spec, "a", champion, candidate, project_root=tmp_path, sample=TrafficSample(recs, "x")
    )
    assert expected in result.notes
    assert server.overlaps == []
    m = result.metrics
    for side in ("champion", "candidate"):  # throughput over the side's own phases, not the whole replay
        assert m[f"{side}.tokens_per_s"] == pytest.approx(m[f"{side}.output_tokens"] / m[f"{side}.wall_s"])
    assert m["champion.wall_s"] + m["candidate.wall_s"] <= m["shadow.wall_s"]
    assert [row["id"] for row in result.rows] == [r.id for r in recs]


SHADOW = """\
version: s1
traffic:
  source: traffic.jsonl
concurrency: 4
"""


def test_shadow_timing_defaults_to_phases(tmp_path: Path) -> None:
    (tmp_path / "shadow.yaml").write_text(SHADOW)
    spec = load_spec(tmp_path / "shadow.yaml", ShadowSpec)
    assert (spec.timing, spec.time_scale) == ("phases", 1.0)


def test_recorded_timing_with_a_time_scale_loads(tmp_path: Path) -> None:
    (tmp_path / "shadow.yaml").write_text(SHADOW + "timing: recorded\ntime_scale: 0.25\n")
    spec = load_spec(tmp_path / "shadow.yaml", ShadowSpec)
    assert (spec.timing, spec.time_scale) == ("recorded", 0.25)


@pytest.mark.parametrize(
    ("extra", "field_", "match"),
    [
        ("timing: live\n", "timing", "'phases' or 'recorded'"),
        ("timing: recorded\ntime_scale: 0\n", "time_scale", "greater than 0"),
        ("timing: recorded\ntime_scale: -2\n", "time_scale", "greater than 0"),
        ("time_scale: 0.5\n", "time_scale", "only with timing: recorded"),
        ("timing: phases\ntime_scale: 2\n", "time_scale", "only with timing: recorded"),
    ],
)
def test_invalid_shadow_timing_names_the_field(tmp_path: Path, extra: str, field_: str, match: str) -> None:
    (tmp_path / "shadow.yaml").write_text(SHADOW + extra)
    with pytest.raises(SpecError, match=match) as info:
        load_spec(tmp_path / "shadow.yaml", ShadowSpec)
    assert info.value.field == field_


def test_the_terminal_shadow_table_says_how_the_sides_were_timed() -> None:
    from rich.console import Console

    from llmrelease.report import shadow_table

    note = "timing: alternating phases (ABBA, 2 blocks), one side in flight at a time, concurrency 8 per side"
    shadow = {"requests": 40, "notes": ["40 requests sampled", note], "metrics": {"champion.ttft_p95_s": 0.5}}
    console = Console(width=200, record=True)
    console.print(shadow_table(shadow))
    assert "alternating phases (ABBA, 2 blocks)" in console.export_text()
