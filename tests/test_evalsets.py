"""Evalset rows: a bad line is reported with its file and line number; good rows become a Dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmrelease.errors import EvalsetError
from llmrelease.project import EvalsetRef
from llmrelease.specs import EvalsetCard
from llmrelease.tasks.evaluation.evalsets import read_evalset

CARD = EvalsetCard(version="c1", description="d", scorers=[{"name": "acc", "kind": "exact_match"}])
GOOD = {"id": "a", "vars": {"ticket": "hello"}, "reference": "x", "tags": ["t"]}


def ref_for(tmp_path: Path, lines: list[str]) -> EvalsetRef:
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return EvalsetRef("set", path, CARD, tmp_path / "set.card.yaml")


def good(i: int) -> str:
    return json.dumps({**GOOD, "id": f"r{i}"})


def test_valid_rows_load_in_order(tmp_path: Path) -> None:
    rows = read_evalset(ref_for(tmp_path, [good(1), "", good(2)]), ["ticket"])
    assert [r.id for r in rows] == ["r1", "r2"]


@pytest.mark.parametrize(
    ("bad", "field", "match"),
    [
        ('{"id": "x", "vars": {"ticket": "t"}, "reference": "r"', None, "not valid JSON"),
        ('["a list"]', None, "must be a JSON object"),
        ('{"id": "x", "vars": {"ticket": "t"}}', "reference", "required field is missing"),
        ('{"id": "x", "vars": {"ticket": "t"}, "reference": "r", "lable": 1}', "lable", "unknown field"),
        ('{"id": "x", "vars": {"other": "t"}, "reference": "r"}', "vars", "missing template variable"),
        ('{"id": "", "vars": {"ticket": "t"}, "reference": "r"}', "id", "at least 1 character"),
        ('{"id": "r1", "vars": {"ticket": "t"}, "reference": "r"}', "id", "duplicate id 'r1'"),
    ],
)
def test_bad_line_names_file_line_and_field(tmp_path: Path, bad: str, field: str | None, match: str) -> None:
    ref = ref_for(tmp_path, [good(1), good(2), bad, good(3)])
    with pytest.raises(EvalsetError, match=match) as info:
        read_evalset(ref, ["ticket"])
    assert info.value.line == 3
    assert info.value.field == field
    assert str(info.value).startswith(f"{ref.path}:3")


def test_empty_evalset_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EvalsetError, match="empty"):
        read_evalset(ref_for(tmp_path, [""]), ["ticket"])


def test_digest_covers_every_row_and_field(tmp_path: Path) -> None:
    from llmrelease.tasks.evaluation.evalsets import rows_digest

    rows = read_evalset(ref_for(tmp_path, [good(i) for i in range(3)]), ["ticket"])
    same = read_evalset(ref_for(tmp_path, [good(i) for i in range(3)]), ["ticket"])
    assert rows_digest(rows) == rows_digest(same)
    retagged = [r.model_copy(update={"tags": ["other"]}) if r.id == "r2" else r for r in rows]
    assert rows_digest(retagged) != rows_digest(rows)
    assert rows_digest(rows[:2]) != rows_digest(rows)


def test_reference_is_required_when_a_scorer_compares_with_it(project: Path) -> None:
    from llmrelease.project import load_app
    from llmrelease.tasks.evaluation.evalsets import load_evalsets

    path = project / "evalsets/support-triage/tickets.jsonl"
    lines = path.read_text().splitlines()
    row = json.loads(lines[4])
    del row["reference"]
    lines[4] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EvalsetError, match="required field is missing") as info:
        load_evalsets(load_app(project, "support-triage"))
    assert (info.value.line, info.value.field) == (5, "reference")


def _loaded(tmp_path: Path, n: int):
    from llmrelease.tasks.evaluation.evalsets import scan_evalset

    return scan_evalset(ref_for(tmp_path, [good(i) for i in range(n)]), ["ticket"])


def test_rows_stream_in_chunks_in_file_order(tmp_path: Path) -> None:
    ev = _loaded(tmp_path, 7)
    assert [[r.id for r in c] for c in ev.batches(3)] == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r6"]]
    assert [r.id for r in ev.rows()] == [f"r{i}" for i in range(7)]


def test_load_keeps_count_and_digest_not_rows(project: Path) -> None:
    from llmrelease.project import load_app
    from llmrelease.tasks.evaluation.evalsets import load_evalsets, rows_digest

    (tickets, *_) = load_evalsets(load_app(project, "support-triage"))
    rows = tickets.rows()
    assert tickets.size == len(rows) and tickets.digest == rows_digest(rows)


def test_an_evalset_edited_during_the_release_fails_it(tmp_path: Path) -> None:
    ev = _loaded(tmp_path, 5)
    lines = ev.ref.path.read_text().splitlines()
    lines[3] = json.dumps({**GOOD, "id": "r3", "reference": "changed"})
    ev.ref.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EvalsetError, match="changed on disk while the release was running") as info:
        list(ev.batches(2))
    assert info.value.file == str(ev.ref.path)


def test_chunk_size_comes_from_the_environment(monkeypatch) -> None:
    from llmrelease.errors import InputError
    from llmrelease.tasks.evaluation.evalsets import DEFAULT_CHUNK_ROWS, chunk_rows

    monkeypatch.delenv("LLMRELEASE_CHUNK_ROWS", raising=False)
    assert chunk_rows() == DEFAULT_CHUNK_ROWS
    monkeypatch.setenv("LLMRELEASE_CHUNK_ROWS", "64")
    assert chunk_rows() == 64
    for bad in ("0", "-3", "lots"):
        monkeypatch.setenv("LLMRELEASE_CHUNK_ROWS", bad)
        with pytest.raises(InputError, match="LLMRELEASE_CHUNK_ROWS"):
            chunk_rows()


def test_a_bad_chunk_size_fails_while_loading_before_anything_is_registered(
    project: Path, monkeypatch
) -> None:
    from llmrelease.errors import InputError
    from llmrelease.project import load_app
    from llmrelease.tasks.evaluation.evalsets import load_evalsets

    monkeypatch.setenv("LLMRELEASE_CHUNK_ROWS", "0")
    with pytest.raises(InputError, match="must be a positive integer"):
        load_evalsets(load_app(project, "support-triage"))


def test_the_dataset_logged_to_mlflow_holds_every_row(tmp_path: Path) -> None:
    ev = _loaded(tmp_path, 5)
    with ev.hf_dataset() as ds:
        assert ds.num_rows == 5
        assert ds[4]["id"] == "r4" and json.loads(ds[4]["vars"]) == {"ticket": "hello"}
        assert ds[0]["tags"] == ["t"] and json.loads(ds[0]["reference"]) == "x"


def test_a_reference_without_the_scorers_field_is_an_input_error(project: Path) -> None:
    """``field: priority`` on the demo used to score every item 1.0 ('' == ''): now the first
    reference without the field stops the load, naming its line and the field."""
    import yaml

    from llmrelease.project import load_app
    from llmrelease.tasks.evaluation.evalsets import load_evalsets

    card = project / "evalsets/support-triage/tickets.card.yaml"
    data = yaml.safe_load(card.read_text())
    data["scorers"].append({"name": "priority_accuracy", "kind": "exact_match", "field": "priority"})
    card.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(EvalsetError, match="the reference has no 'priority'") as info:
        load_evalsets(load_app(project, "support-triage"))
    assert (info.value.line, info.value.field) == (1, "reference.priority")
    assert info.value.file and info.value.file.endswith("tickets.jsonl")


def _raw_ref(tmp_path: Path, raw: bytes) -> EvalsetRef:
    path = tmp_path / "set.jsonl"
    path.write_bytes(raw)
    return EvalsetRef("set", path, CARD, tmp_path / "set.card.yaml")


def test_a_byte_that_is_not_utf8_names_line_offset_and_variable(tmp_path: Path) -> None:
    bad = json.dumps({**GOOD, "id": "x", "vars": {"ticket": "caf\u00e9"}}, ensure_ascii=False).encode()
    lines = [good(1).encode(), good(2).encode(), bad.replace("\u00e9".encode(), b"\xe9")]
    raw = b"\n".join(lines) + b"\n"
    offset = raw.index(b"\xe9")
    with pytest.raises(EvalsetError, match=rf"not UTF-8: byte\(s\) e9 at byte offset {offset}\b") as info:
        read_evalset(_raw_ref(tmp_path, raw), ["ticket"])
    assert (info.value.line, info.value.field) == (3, "vars.ticket")


def test_a_byte_order_mark_on_the_first_line_is_not_an_error(tmp_path: Path) -> None:
    rows = read_evalset(_raw_ref(tmp_path, b"\xef\xbb\xbf" + good(1).encode() + b"\n"), ["ticket"])
    assert [r.id for r in rows] == ["r1"]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ('{"id": "x", "vars": {"ticket": "t"}, "reference": "r", "id": "y"}', "id"),
        ('{"id": "x", "vars": {"ticket": "t", "ticket": "u"}, "reference": "r"}', "ticket"),
    ],
)
def test_a_duplicate_json_key_is_an_error(tmp_path: Path, bad: str, field: str) -> None:
    with pytest.raises(EvalsetError, match=f"duplicate key '{field}'") as info:
        read_evalset(ref_for(tmp_path, [good(1), bad]), ["ticket"])
    assert (info.value.line, info.value.field) == (2, field)


def test_a_directory_in_place_of_the_evalset_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "set.jsonl").mkdir()
    ref = EvalsetRef("set", tmp_path / "set.jsonl", CARD, tmp_path / "set.card.yaml")
    with pytest.raises(EvalsetError, match="is a directory"):
        read_evalset(ref, ["ticket"])
