"""``dtype: auto`` means fp32 on a CPU without bf16 units (where bf16 is emulated and ~5x slower)."""

import pytest

from llmrelease.engines import dtype as dt
from llmrelease.engines.openai_server import server_args
from llmrelease.specs import EngineSpec


@pytest.fixture
def cpu_flags(monkeypatch, tmp_path):
    def use(flags: str) -> None:
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        real = dt.Path
        monkeypatch.setattr(dt, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real(p))
        dt.cpu_has_bf16.cache_clear()

    yield use
    dt.cpu_has_bf16.cache_clear()


@pytest.mark.parametrize(
    ("flags", "accelerator", "expected"),
    [
        ("fpu sse avx avx2 fma", False, "float32"),
        ("avx2 avx512f avx512_bf16", False, "bfloat16"),
        ("avx2 amx_bf16 amx_tile", False, "bfloat16"),
        ("avx2 fma", True, "auto"),  # an accelerator: the checkpoint's own dtype, as vLLM reads it
    ],
)
def test_auto_resolves_by_what_the_host_computes_fast(cpu_flags, flags, accelerator, expected):
    cpu_flags(flags)
    assert dt.resolve_dtype("auto", accelerator=accelerator) == expected


def test_an_explicit_dtype_is_kept_whatever_the_host(cpu_flags):
    cpu_flags("avx2")
    assert dt.resolve_dtype("bfloat16", accelerator=False) == "bfloat16"
    assert dt.resolve_dtype("float16", accelerator=True) == "float16"


def test_the_server_gets_the_resolved_dtype(cpu_flags, tmp_path):
    cpu_flags("avx2 fma")
    args = server_args(tmp_path, EngineSpec(dtype="auto"), name="m", port=1, prefix_caching=True)
    assert args[args.index("--dtype") + 1] == "float32"
    assert dt.dtype_bits("float32") == 32.0 and dt.dtype_bits("bfloat16") == 16.0
