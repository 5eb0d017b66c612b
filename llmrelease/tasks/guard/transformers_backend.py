"""Llama Guard with transformers: batched greedy generation on the accelerator when there is one.

Inputs are sorted by length and cut into batches of ``batch_size`` (left padding), so padding stays
small and one long conversation does not slow every batch. ``constrain_verdict`` limits decoding to
the verdict grammar through ``prefix_allowed_tokens_fn``: a token trie of 'safe' and
'unsafe\\n<code>' for every code, then end of sequence.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmrelease.engines.dtype import cpu_has_bf16

__all__ = ["TransformersGuard", "pick_device"]


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("guard device 'cuda' requested but no CUDA device is visible to this worker")
    return device


def _dtype(name: str, device: str) -> Any:
    """``auto``: bfloat16 on an accelerator and on bf16-capable CPUs (3x faster than float32 for
    the stand-in guard on this project's CI machines), else float32."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device == "cuda" or cpu_has_bf16() else torch.float32
    return getattr(torch, name)


class TransformersGuard:
    """A loaded guard checkpoint; ``generate(texts)`` returns the raw answers in input order."""

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 16,
        max_new_tokens: int = 16,
        constrain_codes: list[str] | None = None,
        share_prefix: bool = True,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.perf_counter()
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = (
            AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=_dtype(dtype, self.device))
            .to(self.device)
            .eval()
        )
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self._allowed = self._verdict_trie(constrain_codes) if constrain_codes else None
        self.share_prefix = share_prefix
        self._torch = torch
        self.load_s = time.perf_counter() - t0

    def _verdict_trie(self, codes: list[str]) -> list[list[int]]:
        eos = self.tokenizer.eos_token_id
        answers = ["safe"] + [f"unsafe\n{c}" for c in codes]
        return [self.tokenizer.encode(a, add_special_tokens=False) + [eos] for a in answers]

    def _constraint(self, prompt_len: int) -> Callable[[int, Any], list[int]]:
        seqs = self._allowed or []
        eos = self.tokenizer.eos_token_id

        def allowed(_batch_id: int, input_ids: Any) -> list[int]:
            done = input_ids[prompt_len:].tolist()
            nxt = {s[len(done)] for s in seqs if len(s) > len(done) and s[: len(done)] == done}
            return sorted(nxt) or [eos]

        return allowed

    def generate(self, texts: list[str], progress: Callable[[int], None] | None = None) -> list[str]:
        """Greedy answers, one per input text (special tokens already in the text).

        Guard prompts share a long prefix (the task and the category list: most of each prompt).
        With ``share_prefix`` its keys and values are computed once and every batch continues from
        a copy, laid out as [prefix][padding][rest] with the padding masked: position ids come from
        the attention mask, so each row sees exactly the positions it would see unpadded."""
        ids = [self.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
        out: list[str] = [""] * len(texts)
        # Prompt checks and response checks word the task differently early on: each kind is a
        # group with its own shared prefix.
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(ids):
            groups.setdefault(tuple(x[:_GROUP_KEY]) if self.share_prefix else (), []).append(i)
        for members in groups.values():
            self._generate_group(ids, sorted(members, key=lambda i: len(ids[i])), out, progress)
        return out

    def _generate_group(
        self,
        ids: list[list[int]],
        order: list[int],
        out: list[str],
        progress: Callable[[int], None] | None,
    ) -> None:
        torch = self._torch
        prefix = _common_prefix([ids[i] for i in order]) if self.share_prefix and len(order) > 1 else []
        cache = self._prefix_cache(prefix) if len(prefix) >= _MIN_SHARED_PREFIX else None
        if cache is None:
            prefix = []
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            input_ids, mask = self._batch([ids[i][len(prefix) :] for i in idx], prefix)
            prompt_len = input_ids.shape[1]
            kwargs: dict[str, Any] = {
                "max_new_tokens": self.max_new_tokens,
                "do_sample": False,
                "pad_token_id": self.tokenizer.pad_token_id,
            }
            if cache is not None:
                batch_cache = copy.deepcopy(cache)
                batch_cache.batch_repeat_interleave(len(idx))
                kwargs["past_key_values"] = batch_cache
            if self._allowed is not None:
                kwargs["prefix_allowed_tokens_fn"] = self._constraint(prompt_len)
            with torch.inference_mode():
                gen = self.model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
            answers = self.tokenizer.batch_decode(gen[:, prompt_len:], skip_special_tokens=True)
            for i, answer in zip(idx, answers, strict=True):
                out[i] = answer
            if progress is not None:
                progress(len(idx))

    def _prefix_cache(self, prefix: list[int]) -> Any:
        torch = self._torch
        with torch.inference_mode():
            return self.model(
                input_ids=torch.tensor([prefix], device=self.device), use_cache=True
            ).past_key_values

    def _batch(self, rests: list[list[int]], prefix: list[int]) -> tuple[Any, Any]:
        """[prefix][pad...][rest] per row, and its attention mask (prefix and rest 1, padding 0)."""
        torch = self._torch
        width = max(len(r) for r in rests)
        pad = self.tokenizer.pad_token_id
        rows = [prefix + [pad] * (width - len(r)) + r for r in rests]
        mask = [[1] * len(prefix) + [0] * (width - len(r)) + [1] * len(r) for r in rests]
        return (
            torch.tensor(rows, device=self.device),
            torch.tensor(mask, device=self.device),
        )


_GROUP_KEY = 64
"""Texts whose first this-many tokens agree share one prefix computation."""
_MIN_SHARED_PREFIX = 16
"""Below this many shared tokens, one more forward pass and cache copies cost more than they save."""


def _common_prefix(ids: list[list[int]]) -> list[int]:
    """The longest token prefix of every sequence, leaving each at least one token of its own (the
    model must see a fresh token to predict the first answer token)."""
    first = ids[0]
    n = min(len(x) for x in ids) - 1
    for x in ids[1:]:
        k = 0
        while k < n and x[k] == first[k]:
            k += 1
        n = k
    return first[: max(n, 0)]
