"""Benchmark 5 (GPU): batched versus one-at-a-time generation with transformers, no internet.

Builds a randomly initialised Llama-architecture model of about 1B parameters locally (no download,
no tokenizer: prompts are random token ids), then generates the same prompts greedily with a fixed
number of new tokens, once batched and once one prompt at a time. Prints tokens/s of each and the
ratio. This is the guard/eval generation path's shape (transformers, left padding, greedy), so the
GPU path has a number even where vLLM is not installed.

    python bench/gpu/transformers_batching.py                 # ~1B model on CUDA (bf16)
    python bench/gpu/transformers_batching.py --tiny          # a 2-layer model: check it runs on CPU
"""

from __future__ import annotations

import argparse
import time
from typing import Any


def llama_config(*, tiny: bool, vocab_size: int, **extra: int) -> Any:
    """A Llama-3.2-1B-shaped config (~1.2B parameters with a 128k vocabulary; Llama Guard 3 1B has
    this shape), or a 2-layer one for a CPU smoke run."""
    from transformers import LlamaConfig

    if tiny:
        shape = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2}
        heads = {"num_attention_heads": 4, "num_key_value_heads": 4}
    else:
        shape = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16}
        heads = {"num_attention_heads": 32, "num_key_value_heads": 8}
    return LlamaConfig(
        vocab_size=vocab_size,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
        **shape,
        **heads,
        **extra,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tiny", action="store_true", help="2 layers, hidden 256: a CPU smoke run")
    args = parser.parse_args()

    import torch
    from transformers import LlamaForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    cfg = llama_config(tiny=args.tiny, vocab_size=32000 if args.tiny else 128256)
    cfg.pad_token_id = 0
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e9
    prompts = torch.randint(10, cfg.vocab_size, (args.prompts, args.prompt_len), device=device)
    mask = torch.ones_like(prompts)
    gen = {
        "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens,
        "do_sample": False,
        "pad_token_id": 0,
    }

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        model.generate(input_ids=prompts[:2], attention_mask=mask[:2], **gen)  # warm-up
        sync()
        t0 = time.perf_counter()
        for i in range(0, args.prompts, args.batch_size):
            model.generate(
                input_ids=prompts[i : i + args.batch_size],
                attention_mask=mask[i : i + args.batch_size],
                **gen,
            )
        sync()
        batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(args.prompts):
            model.generate(input_ids=prompts[i : i + 1], attention_mask=mask[i : i + 1], **gen)
        sync()
        single = time.perf_counter() - t0

    tokens = args.prompts * args.new_tokens
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(
        f"device={name} params={params:.2f}B dtype={dtype} prompts={args.prompts} "
        f"prompt_len={args.prompt_len} new_tokens={args.new_tokens} batch_size={args.batch_size}"
    )
    print(f"batched:  {tokens / batched:,.0f} tok/s ({batched:.2f}s)")
    print(f"one-by-one: {tokens / single:,.0f} tok/s ({single:.2f}s)")
    print(f"ratio batched/one-by-one = {single / batched:.1f}x")


if __name__ == "__main__":
    main()
