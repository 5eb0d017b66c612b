"""Prompt lengths against the engine's context window, checked before anything is registered.

vLLM refuses a prompt of ``max_model_len`` tokens or more: a longer one is "longer than the maximum
model length", and an equal one leaves no room for the one output token a generation needs
(vllm 0.32, ``vllm/v1/engine/input_processor.py``, ``InputProcessor._validate_prompt_len``; the
OpenAI server applies the same bound). It does so per request, in the middle of an evaluation or a
shadow replay, after the candidate was registered. The plan therefore renders every evalset row,
and every sampled traffic request, the way the engine will (the prompt template, then the model's
own chat template with the generation prompt, tokenized without adding special tokens, as
``LLM.enqueue_chat`` does) and counts the tokens with the model's own tokenizer.

Rendering and tokenizing ten thousand rows takes about a second (plus transformers' import, ~4 s),
so a passing result is remembered on disk, keyed by everything it depends on: the rows, the prompt,
the tokenizer and chat template, ``max_model_len`` and the rule itself. The CLI's preflight and the
release flow's plan step then pay it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmrelease.errors import EvalsetError, SpecError
from llmrelease.specs import content_hash

if TYPE_CHECKING:
    from llmrelease.project import AppSpec
    from llmrelease.tasks.evaluation.evalsets import Evalset
    from llmrelease.tasks.shadow.traffic import TrafficSample

__all__ = ["check_prompt_lengths", "fits", "RULE"]

log = logging.getLogger("llmrelease.prompt_length")

RULE = "prompt_tokens < max_model_len (vllm 0.32 InputProcessor._validate_prompt_len)"
"""Part of the cache key: a change of the rule invalidates remembered results."""

_BATCH = 1024
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)
# engine.extra keys that change the tokenizer, the chat template or the context: the check would
# count with the wrong tokenizer, so it is left to the engine.
_CHANGES_TOKENS = frozenset(
    {
        "tokenizer",
        "tokenizer_mode",
        "tokenizer_revision",
        "chat_template",
        "hf_overrides",
        "skip_tokenizer_init",
    }
)
_LENGTH_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_target_positions",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)


def fits(prompt_tokens: int, max_model_len: int) -> bool:
    """vLLM's rule: a generation needs the prompt plus at least one output token in the context."""
    return 0 < prompt_tokens < max_model_len


@dataclass(frozen=True)
class _Tokenizer:
    identity: str
    load: Callable[[], Any]
    config: Path | None
    """The model's config.json, when there is one to read the default context length from."""


def _files_identity(directory: Path) -> str:
    from llmrelease.engines.model_source import file_sha256

    h = hashlib.sha256()
    for name in _TOKENIZER_FILES:
        f = directory / name
        if f.is_file():
            h.update(name.encode())
            h.update(file_sha256(f).encode())
    return h.hexdigest()


def _auto_tokenizer(path: str, **kwargs: Any) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, **kwargs)


def _tokenizer_for(spec: AppSpec) -> _Tokenizer | None:
    """The model's own tokenizer, without loading it yet: a Hugging Face directory's, the GGUF's
    converted copy when it exists, else the GGUF file's (what the conversion would save)."""
    from llmrelease.engines.model_source import converted_dir, locate_source

    path, digest = locate_source(spec.model.source, project_root=spec.root, spec_path=spec.model_path)
    if digest is None:
        return _Tokenizer(_files_identity(path), lambda: _auto_tokenizer(str(path)), path / "config.json")
    converted = converted_dir(path, digest)
    if (converted / "tokenizer_config.json").is_file():
        return _Tokenizer(
            f"gguf:{digest}", lambda: _auto_tokenizer(str(converted)), converted / "config.json"
        )
    return _Tokenizer(f"gguf:{digest}", lambda: _auto_tokenizer(str(path.parent), gguf_file=path.name), None)


def _default_max_len(config: Path | None) -> int | None:
    """What vLLM derives when max_model_len is not given: the smallest length key of the model's
    config (``derive_max_model_len_and_key``). None when it cannot be read, or when RoPE scaling
    stretches it (vLLM multiplies by the factor; not worth mirroring)."""
    if config is None or not config.is_file():
        return None
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    text = cfg.get("text_config") or cfg
    for rope in (text.get("rope_scaling"), text.get("rope_parameters")):
        if isinstance(rope, dict) and rope.get("factor") not in (None, 1, 1.0):
            return None
    if isinstance(text.get("model_max_length"), int):
        return text["model_max_length"]
    found = [text[k] for k in _LENGTH_KEYS if isinstance(text.get(k), int)]
    return min(found) if found else None


def _cache_file(key: str) -> Path:
    from llmrelease.engines.model_source import cache_dir

    return cache_dir() / "prompt-lengths" / f"{key[:32]}.json"


def _remember(key: str, result: dict[str, Any]) -> None:
    path = _cache_file(key)
    try:  # atomic: a reader sees the whole record or none
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(result), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs the next process the count again


def _recalled(key: str) -> dict[str, Any] | None:
    try:
        data = json.loads(_cache_file(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("key") == key else None


def _traffic_digest(traffic: TrafficSample | None) -> str | None:
    if traffic is None:
        return None
    return content_hash([r.model_dump(mode="json", include={"vars", "messages"}) for r in traffic.records])


def _counts(tokenizer: Any, conversations: list[list[dict[str, str]]]) -> list[int]:
    texts = [
        tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations
    ]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _batched(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _longest_var(variables: dict[str, str], used: list[str]) -> str | None:
    names = [v for v in used if v in variables] or list(variables)
    return max(names, key=lambda v: len(variables[v])) if names else None


def check_prompt_lengths(
    spec: AppSpec, evalsets: list[Evalset], traffic: TrafficSample | None = None
) -> dict[str, Any] | None:
    """Refuse the first evalset row (or sampled traffic request) whose rendered prompt vLLM would
    refuse for ``max_model_len``; with ``on_bad_line: skip`` a too-long traffic request is dropped
    from the sample and reported instead. Returns what was checked (longest prompt, the limit), or
    None when the check does not apply (another backend, tokenizer overrides in ``engine.extra``, a
    context length that cannot be known without starting the engine, no chat template)."""
    engine = spec.model.engine
    if engine.backend != "vllm":
        return None
    overrides = sorted(_CHANGES_TOKENS & set(engine.extra))
    if overrides:
        log.info("prompt lengths not checked: engine.extra sets %s", ", ".join(overrides))
        return None
    tok = _tokenizer_for(spec)
    if tok is None:
        return None
    default = _default_max_len(tok.config)
    if (
        engine.max_model_len is not None
        and default is not None
        and engine.max_model_len > default
        and not os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN")
    ):
        from llmrelease.preflight import _key_line

        # vLLM refuses this when the engine starts, after registration (config.model._get_and_verify_max_len).
        raise SpecError(
            f"max_model_len {engine.max_model_len} is more than the model's own context of {default} "
            "tokens (its config.json); vLLM refuses it when the engine starts",
            file=spec.model_path,
            line=_key_line(spec.model_path, ("engine", "max_model_len")),
            field="engine.max_model_len",
            fix=f"set engine.max_model_len to at most {default}",
        )
    limit = engine.max_model_len or default
    if limit is None:
        log.info("prompt lengths not checked: max_model_len is not set and the model's default is unknown")
        return None
    key = content_hash(
        {
            "rule": RULE,
            "tokenizer": tok.identity,
            "transformers": _version("transformers"),
            "max_model_len": limit,
            "prompt": spec.prompt.digest(),
            "evalsets": [[e.name, e.digest, e.size] for e in evalsets],
            "traffic": _traffic_digest(traffic),
        }
    )
    if (hit := _recalled(key)) is not None:
        return hit
    try:
        tokenizer = tok.load()
    except Exception as exc:  # noqa: BLE001 - the engine will say more; this check is an early warning
        log.warning("prompt lengths not checked: cannot load the model's tokenizer (%s)", exc)
        return None
    if not getattr(tokenizer, "chat_template", None):
        log.warning("prompt lengths not checked: the model's tokenizer has no chat template")
        return None
    longest = 0
    used = spec.prompt.variables
    from llmrelease.tasks.evaluation.evalsets import numbered_rows

    for ev in evalsets:
        for batch in _batched(numbered_rows(ev), _BATCH):
            counts = _render_counts(spec, tokenizer, [spec.prompt.render(row.vars) for _, row in batch])
            for (lineno, row), n in zip(batch, counts, strict=True):
                longest = max(longest, n)
                if not fits(n, limit):
                    var = _longest_var(row.vars, used)
                    raise EvalsetError(
                        f"row '{row.id}' renders to a prompt of {n} tokens (prompt template and the "
                        f"model's chat template); max_model_len {limit} leaves room for at most "
                        f"{limit - 1} (vLLM refuses a prompt of max_model_len tokens or more)",
                        file=ev.ref.path,
                        line=lineno,
                        field=f"vars.{var}" if var else "vars",
                        fix=f"shorten the row, or raise engine.max_model_len in {spec.model_path.name}",
                    )
    dropped = 0
    if traffic is not None and traffic.records:
        traffic_longest, dropped = _check_traffic(spec, tokenizer, traffic, limit)
        longest = max(longest, traffic_longest)
    result = {"key": key, "max_prompt_tokens": longest, "max_model_len": limit}
    if not dropped:  # a recalled result could not drop them again
        _remember(key, result)
    return result


def _render_counts(spec: AppSpec, tokenizer: Any, conversations: list[list[dict[str, str]]]) -> list[int]:
    try:
        return _counts(tokenizer, conversations)
    except Exception as exc:  # noqa: BLE001 - jinja's raise_exception: the template refuses the turns
        raise SpecError(
            f"the model's chat template refuses this prompt: {str(exc).splitlines()[0] if str(exc) else exc}",
            file=spec.prompt_path,
            field="messages",
            fix="check the roles and their order against the model's chat template",
        ) from None


def _check_traffic(spec: AppSpec, tokenizer: Any, traffic: TrafficSample, limit: int) -> tuple[int, int]:
    """Sampled requests rendered as the candidate's shadow side sends them (``vars`` through its
    prompt, ``messages`` as recorded). Too long: an error, or dropped under ``on_bad_line: skip``.
    Returns the longest prompt kept and how many were dropped."""
    from llmrelease.tasks.shadow.traffic import TrafficError

    skip = spec.shadow is not None and spec.shadow.traffic.on_bad_line == "skip"
    conversations = [
        spec.prompt.render(r.vars) if r.vars is not None else [m.model_dump() for m in r.messages or []]
        for r in traffic.records
    ]
    counts = _render_counts(spec, tokenizer, conversations)
    keep: list[int] = []
    for i, (rec, n) in enumerate(zip(traffic.records, counts, strict=True)):
        if fits(n, limit):
            keep.append(i)
            continue
        if rec.vars is not None:
            var = _longest_var(rec.vars, spec.prompt.variables)
            field = f"vars.{var}" if var else "vars"
        else:
            msgs = rec.messages or []
            longest_msg = max(range(len(msgs)), key=lambda j: len(msgs[j].content)) if msgs else None
            field = f"messages[{longest_msg}].content" if longest_msg is not None else None
        reason = (
            f"request '{rec.id}' renders to a prompt of {n} tokens; max_model_len {limit} leaves room "
            f"for at most {limit - 1} (vLLM refuses a prompt of max_model_len tokens or more)"
        )
        line = traffic.line_of(i)
        if not skip:
            raise TrafficError(
                reason,
                file=traffic.where or traffic.source,
                line=line,
                field=field,
                fix=f"raise engine.max_model_len in {spec.model_path.name}, or set traffic.on_bad_line: "
                "skip in shadow.yaml to leave such requests out",
            )
        traffic.skipped.append(f"{traffic.where or traffic.source}:{line}: {reason}")
    if len(keep) < len(traffic.records):
        traffic.records = [traffic.records[i] for i in keep]
        traffic.lines = [traffic.lines[i] for i in keep if i < len(traffic.lines)]
        if not traffic.records:
            raise TrafficError(
                "every sampled request is too long for max_model_len", file=traffic.where or traffic.source
            )
    return max((counts[i] for i in keep), default=0), len(counts) - len(keep)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"
