"""How many processes a vLLM engine runs in on a CPU host.

vLLM's default on CPU is three processes: the caller, an engine-core process, and a worker process
the core drives through a shared-memory queue that both sides poll. On a small CPU box those
pollers take cores from the model's own threads. With ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` the
offline engine runs its core in the caller's process and the model in that core (vLLM's CPU
platform then keeps its single-process executor); the OpenAI server keeps its engine-core process
but drops the worker process. Measured side by side on a 2-core AVX2 box (the demo model, 96
prompts, greedy, same outputs): 49-55 tok/s -> 88-93 tok/s, and the engine starts in 16 s instead
of 42-45 s (``bench/scale_out.py`` has the rows). On an accelerator the extra processes overlap
scheduling with the device's work, so vLLM's default stays there; a value the user set always wins.
"""

from __future__ import annotations

from collections.abc import MutableMapping

__all__ = ["VAR", "single_process_on_cpu"]

VAR = "VLLM_ENABLE_V1_MULTIPROCESSING"


def single_process_on_cpu(env: MutableMapping[str, str], *, accelerator: bool | None = None) -> None:
    """Ask vLLM for its single-process layout in ``env`` on a host without an accelerator (CUDA as
    torch sees it, unless ``accelerator`` says), unless the variable is already set there. Must run
    before vLLM reads its settings in the process that gets ``env``."""
    if accelerator is None:
        import torch

        accelerator = bool(torch.cuda.is_available())
    if not accelerator:
        env.setdefault(VAR, "0")
