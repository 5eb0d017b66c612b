"""Traffic logs: parsing, filtering, sampling and bad lines, from a local file and from a real S3
API (moto's server on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmrelease.errors import InputError
from llmrelease.specs import TrafficSpec
from llmrelease.tasks.shadow.traffic import TrafficError, read_traffic


def _line(i: int, app: str = "triage", **extra) -> str:
    rec = {"id": f"r{i}", "timestamp": f"2026-11-{10 + i // 24:02d}T{i % 24:02d}:00:00Z", "app": app}
    rec.update(extra or {"vars": {"ticket": f"ticket {i}"}})
    return json.dumps(rec)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    lines = [_line(i) for i in range(60)]
    lines.insert(5, _line(3, app="other"))
    path = tmp_path / "traffic.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def spec(source: Path | str, **kw) -> TrafficSpec:
    return TrafficSpec(source=str(source), **kw)


def test_first_n_of_this_app_only(log: Path) -> None:
    s = read_traffic(spec(log, n=10), "triage", project_root=log.parent)
    assert [r.id for r in s.records] == [f"r{i}" for i in range(10)]
    assert all(r.app == "triage" for r in s.records)


def test_random_sample_is_seeded_and_uniform_over_the_window(log: Path) -> None:
    a = read_traffic(spec(log, sample="random", n=12, seed=1), "triage", project_root=log.parent)
    b = read_traffic(spec(log, sample="random", n=12, seed=1), "triage", project_root=log.parent)
    c = read_traffic(spec(log, sample="random", n=12, seed=2), "triage", project_root=log.parent)
    assert [r.id for r in a.records] == [r.id for r in b.records] != [r.id for r in c.records]
    assert a.matched == 60 and len(a.records) == 12
    assert [r.timestamp for r in a.records] == sorted(r.timestamp for r in a.records)


def test_time_window(log: Path) -> None:
    s = read_traffic(
        spec(log, n=100, since="2026-11-11T00:00:00Z", until="2026-11-12T00:00:00"),
        "triage",
        project_root=log.parent,
    )
    assert [r.id for r in s.records] == [f"r{i}" for i in range(24, 48)]


@pytest.mark.parametrize(
    ("bad", "reason", "field"),
    [
        ("{not json", "not valid JSON", None),
        ('["a list"]', "each line must be a JSON object", None),
        (json.dumps({"timestamp": "2026-11-10T00:00:00Z", "app": "triage"}), "exactly one of 'vars'", None),
        (json.dumps({"timestamp": "yesterday", "app": "triage", "vars": {}}), "datetime", "timestamp"),
        (
            json.dumps({"timestamp": "2026-11-10T00:00:00Z", "app": "triage", "varz": {}}),
            "unknown field",
            "varz",
        ),
        (
            json.dumps({"timestmap": "2026-11-10", "app": "triage", "vars": {}}),
            "required: timestamp",
            "timestmap",
        ),
    ],
)
def test_bad_line_fails_with_file_line_and_field(log: Path, bad: str, reason: str, field: str | None) -> None:
    lines = log.read_text().splitlines()
    lines.insert(3, bad)
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(TrafficError, match=reason) as info:
        read_traffic(spec(log), "triage", project_root=log.parent)
    assert info.value.line == 4 and info.value.file == str(log)
    if field:
        assert info.value.field == field
    assert "on_bad_line: skip" in str(info.value)


def test_bad_lines_skipped_when_the_policy_says_so(log: Path) -> None:
    lines = log.read_text().splitlines()
    lines[2] = "{oops"
    lines.append(_line(70, vars={"wrong": "x"}))
    log.write_text("\n".join(lines) + "\n")
    s = read_traffic(
        spec(log, n=100, on_bad_line="skip"), "triage", project_root=log.parent, variables=["ticket"]
    )
    assert len(s.skipped) == 2
    assert s.skipped[0].startswith(f"{log}:3: not valid JSON")
    assert "missing template variable(s) ticket" in s.skipped[1] and ":62:" in s.skipped[1]
    assert len(s.records) == 59


def test_a_line_that_is_not_utf8_is_a_bad_line_with_its_offset(log: Path) -> None:
    raw = log.read_bytes().split(b"\n")
    raw[2] = raw[2].replace(b"ticket 2", b"ticket \xff2")
    log.write_bytes(b"\n".join(raw))
    offset = log.read_bytes().index(b"\xff")
    with pytest.raises(TrafficError, match=rf"not UTF-8: byte\(s\) ff at byte offset {offset}\b") as info:
        read_traffic(spec(log), "triage", project_root=log.parent)
    assert (info.value.line, info.value.field) == (3, "vars.ticket")
    s = read_traffic(spec(log, n=100, on_bad_line="skip"), "triage", project_root=log.parent)
    assert len(s.skipped) == 1 and s.skipped[0].startswith(f"{log}:3: not UTF-8")
    assert "r2" not in {r.id for r in s.records}


def test_a_duplicate_json_key_is_a_bad_line(log: Path) -> None:
    lines = log.read_text().splitlines()
    lines[1] = lines[1][:-1] + ', "app": "other"}'
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(TrafficError, match="duplicate key 'app'") as info:
        read_traffic(spec(log), "triage", project_root=log.parent)
    assert (info.value.line, info.value.field) == (2, "app")


def test_a_directory_in_place_of_the_log_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "traffic.jsonl").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        read_traffic(spec(tmp_path / "traffic.jsonl"), "triage", project_root=tmp_path)


def test_sampled_records_keep_their_line_numbers(log: Path) -> None:
    s = read_traffic(spec(log, n=8, sample="random", seed=3), "triage", project_root=log.parent)
    lines = log.read_text().splitlines()
    for rec, line in zip(s.records, s.lines, strict=True):
        assert json.loads(lines[line - 1])["id"] == rec.id


def test_messages_records_and_missing_app(log: Path) -> None:
    log.write_text(_line(1, messages=[{"role": "user", "content": "hi"}]) + "\n")
    s = read_traffic(spec(log), "triage", project_root=log.parent)
    assert s.records[0].messages[0].content == "hi"
    with pytest.raises(InputError, match="no requests for app 'nope'"):
        read_traffic(spec(log), "nope", project_root=log.parent)
    with pytest.raises(InputError, match="traffic log not found"):
        read_traffic(spec(log.parent / "missing.jsonl"), "triage", project_root=log.parent)


def test_from_a_real_s3_api(log: Path, s3) -> None:
    s3.create_bucket(Bucket="logs")
    s3.put_object(Bucket="logs", Key="prod/2026-11.jsonl", Body=log.read_bytes())
    s = read_traffic(spec("s3://logs/prod/2026-11.jsonl", n=5), "triage", project_root=log.parent)
    assert [r.id for r in s.records] == ["r0", "r1", "r2", "r3", "r4"]
    with pytest.raises(InputError, match="traffic log not found: s3://logs/nope.jsonl"):
        read_traffic(spec("s3://logs/nope.jsonl"), "triage", project_root=log.parent)
