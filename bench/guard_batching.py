"""Guard throughput: batched classification versus one conversation at a time, same items.

Runs the guard's real transformers path (the Llama Guard 3 prompt, left-padded batches sorted by
length, greedy ``generate``) over the demo app's tickets and red-team prompts, with and without
their responses, once per batch size (with and without computing the shared task-and-categories
prefix once), and prints classifications/s and the ratio to batch size 1.
The verdicts of each batched run are compared with the one-at-a-time run (agreement).

    python bench/guard_batching.py                                  # the demo's guard checkpoint (CPU)
    python bench/guard_batching.py --model-dir /models/Llama-Guard-3-1B
    python bench/guard_batching.py --random-init 1b --tokenizer-dir DIR   # GPU host, no download

``--random-init`` builds a Llama-3.2-1B-shaped model with random weights next to the tokenizer in
``DIR`` (no internet needed): its verdicts are noise (all unparsed) but the work per item is that of
Llama Guard 3 1B, which is what the throughput ratio is about. Random weights never stop early, so
every item generates exactly ``--max-new-tokens`` tokens in every mode.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench" / "gpu"))

from transformers_batching import llama_config  # noqa: E402

from llmrelease.specs import LLAMA_GUARD_3_CATEGORIES  # noqa: E402
from llmrelease.tasks.guard.prompt import guard_conversation, render_guard_input  # noqa: E402
from llmrelease.tasks.guard.transformers_backend import TransformersGuard  # noqa: E402
from llmrelease.tasks.guard.verdict import parse_verdict  # noqa: E402

CATEGORIES = [(c, n, "") for c, n in LLAMA_GUARD_3_CATEGORIES]
RESPONSES = ['{"category": "billing", "urgency": "low"}', '{"category": "technical", "urgency": "high"}']


def conversations(n: int) -> list[list[dict[str, str]]]:
    """Demo tickets and red-team prompts, as prompt checks and response checks, repeated to ``n``."""
    ev = REPO / "evalsets" / "support-triage"
    texts = [
        json.loads(line)["vars"]["ticket"]
        for name in ("tickets.jsonl", "redteam.jsonl")
        for line in (ev / name).read_text().splitlines()
        if line.strip()
    ]
    base = []
    for i, t in enumerate(texts):
        msgs = [{"role": "user", "content": t}]
        base.append(guard_conversation(msgs))
        base.append(guard_conversation(msgs, RESPONSES[i % 2]))
    return [base[i % len(base)] for i in range(n)]


def random_checkpoint(size: str, tokenizer_dir: Path, dest: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    # Llama Guard 3 1B's shape with the given tokenizer's vocabulary (bench/gpu shares the shape).
    cfg = llama_config(
        tiny=size == "tiny", vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(str(dest))
    tok.save_pretrained(str(dest))
    for extra in ("chat_template.jinja",):
        if (tokenizer_dir / extra).exists():
            shutil.copy(tokenizer_dir / extra, dest / extra)
    return dest


def demo_guard_dir() -> Path:
    from llmrelease.engines.model_source import resolve_model_dir
    from llmrelease.project import load_app

    spec = load_app(REPO, "support-triage")
    assert spec.guard is not None
    return resolve_model_dir(spec.guard.source, project_root=REPO, spec_path=spec.guard_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="a local guard checkpoint (HF format)")
    parser.add_argument("--random-init", choices=["tiny", "1b"], help="random weights, no download")
    parser.add_argument("--tokenizer-dir", type=Path, help="tokenizer files for --random-init")
    parser.add_argument("--items", type=int, default=64, help="classifications per mode")
    parser.add_argument("--batch-sizes", default="8,32", help="batched modes, compared with 1")
    parser.add_argument("--max-new-tokens", type=int, default=10)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    tmp = None
    if args.random_init:
        if not args.tokenizer_dir:
            parser.error("--random-init needs --tokenizer-dir")
        tmp = Path(tempfile.mkdtemp(prefix="guard-bench-"))
        model_dir = random_checkpoint(args.random_init, args.tokenizer_dir, tmp)
    else:
        model_dir = args.model_dir or demo_guard_dir()

    convs = conversations(args.items)
    results: dict[str, tuple[float, list[str]]] = {}
    modes = [(1, False)] + [(int(b), share) for b in args.batch_sizes.split(",") for share in (False, True)]
    for bs, share in modes:
        guard = TransformersGuard(
            model_dir,
            device=args.device,
            batch_size=bs,
            max_new_tokens=args.max_new_tokens,
            share_prefix=share,
        )
        texts = [render_guard_input(guard.tokenizer, c, CATEGORIES) for c in convs]
        guard.generate(texts[: min(bs, 4)])  # warm-up (kernels, allocator)
        if guard.device == "cuda":
            import torch

            torch.cuda.synchronize()
        t0 = time.perf_counter()
        answers = guard.generate(texts)
        if guard.device == "cuda":
            torch.cuda.synchronize()
        results[f"{bs:>3}{' + shared prefix' if share else ''}"] = (time.perf_counter() - t0, answers)
        del guard

    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    codes = [c for c, _, _ in CATEGORIES]
    base_s, base_answers = results["  1"]
    base_verdicts = [parse_verdict(a, codes).label for a in base_answers]
    print(
        f"device={device} model={args.random_init or model_dir.name} items={args.items} "
        f"max_new_tokens={args.max_new_tokens}"
    )
    for bs, (secs, answers) in results.items():
        verdicts = [parse_verdict(a, codes).label for a in answers]
        agree = sum(a == b for a, b in zip(verdicts, base_verdicts, strict=True)) / len(verdicts)
        print(
            f"batch_size={bs:<20}: {args.items / secs:7.2f} classifications/s "
            f"({secs / args.items * 1000:6.1f} ms/item)"
            f"  ratio vs one-at-a-time {base_s / secs:5.1f}x  verdict agreement {agree:.0%}"
        )
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
