"""Preflight: check model sources and engine arguments before anything is registered.

A wrong weight path or a misspelt vLLM argument used to surface inside generation, minutes after
the candidate was registered in MLflow. These checks are cheap (a stat, a hash remembered for the
engine, a parse of vLLM's source text), so they run up front and fail with file, line and field.

vLLM is never imported here: importing it costs ~10 s, and the CLI and pure-logic tests must start
in a second. The accepted engine argument names are read from vLLM's source with ``ast`` instead.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from llmrelease.engines.model_source import locate_source
from llmrelease.errors import SpecError
from llmrelease.specfile import _node_for, compose_file
from llmrelease.specs import EngineSpec, ModelSource

if TYPE_CHECKING:
    from llmrelease.project import AppSpec

__all__ = ["engine_arg_names", "check_engine", "check_source", "check_app_sources"]

log = logging.getLogger("llmrelease.preflight")

# Keys the pipeline passes to vLLM itself (vllm_offline.VllmEngine, openai_server.server_args); an
# ``extra`` entry would override them and break what depends on them (the model directory resolved
# from ``source``, decode-time JSON schemas, TTFT from engine stats, the shadow run's prefix-cache
# switch, the served name and address the client calls).
_SET_BY_PIPELINE: dict[str, str] = {
    "model": "the model comes from 'source'",
    "structured_outputs_config": "structured outputs use xgrammar so response_schema is enforced",
    "enable_prefix_caching": "prefix caching is switched per run (the shadow comparison turns it off)",
    "disable_log_stats": "engine stats stay on: per-item time to first token comes from them",
    "served_model_name": "the OpenAI server's model name is the spec's name",
    "host": "the OpenAI server listens on 127.0.0.1",
    "port": "the OpenAI server's port is picked free at start",
    "enable_prompt_tokens_details": "the OpenAI server always reports cached prompt tokens",
    "disable_uvicorn_access_log": "the OpenAI server's access log is always off",
}


def _vllm_file(relative: str) -> Path | None:
    """A source file of the installed vllm package, found without executing the package."""
    try:
        spec = importlib.util.find_spec("vllm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = Path(loc) / relative
        if path.is_file():
            return path
    return None


def _class_fields(tree: ast.Module, name: str) -> list[str] | None:
    """Annotated names in the body of a top-level class (a dataclass's fields)."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return [
                s.target.id
                for s in node.body
                if isinstance(s, ast.AnnAssign)
                and isinstance(s.target, ast.Name)
                and "ClassVar" not in ast.unparse(s.annotation)
            ]
    return None


def _init_keywords(tree: ast.Module, name: str) -> list[str] | None:
    """Named parameters of a top-level class's ``__init__`` other than ``self``."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            for f in node.body:
                if isinstance(f, ast.FunctionDef) and f.name == "__init__":
                    args = f.args
                    return [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)][1:]
    return None


@functools.cache
def engine_arg_names() -> frozenset[str] | None:
    """Every keyword ``vllm.LLM`` accepts: the fields of ``EngineArgs`` (where ``LLM(**kwargs)``
    sends what it does not name) plus ``LLM.__init__``'s own parameters (e.g. ``chat_template``).

    Read from the installed vLLM's source with ``ast`` so the check follows the installed version
    without paying vLLM's import. Private fields (``_api_process_count``) are left out: the
    pipeline's users have no business setting them and the OpenAI server has no flag for them.

    Returns None when vLLM is not installed (a pure orchestration box that hands generation to
    workers) or its source no longer has the expected shape; ``check_engine`` then skips the name
    check rather than refusing every key, and the worker's vLLM still rejects a wrong one.
    """
    arg_utils, llm = _vllm_file("engine/arg_utils.py"), _vllm_file("entrypoints/llm.py")
    if arg_utils is None or llm is None:
        return None
    try:
        fields = _class_fields(ast.parse(arg_utils.read_text(encoding="utf-8")), "EngineArgs")
        keywords = _init_keywords(ast.parse(llm.read_text(encoding="utf-8")), "LLM")
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        log.warning("cannot read vLLM's engine arguments (%s); engine.extra names are not checked", exc)
        return None
    if not fields or keywords is None:
        log.warning(
            "vLLM's EngineArgs or LLM.__init__ not found in %s; engine.extra names are not checked", llm
        )
        return None
    return frozenset(n for n in (*fields, *keywords) if not n.startswith("_"))


def _key_line(path: Path | None, loc: tuple[object, ...]) -> int | None:
    """Line of the key at ``loc`` (not its value, which may start on the next line), else of the
    deepest node that exists on the way there."""
    if path is None:
        return None
    root = compose_file(path)
    parent = _node_for(root, loc[:-1])
    if isinstance(parent, yaml.MappingNode):
        for key, _ in parent.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(loc[-1]):
                return key.start_mark.line + 1
    node = _node_for(root, loc)
    return node.start_mark.line + 1 if node is not None else None


def _loc(field: str) -> tuple[str, ...]:
    return tuple(field.split("."))


def check_engine(engine: EngineSpec, *, spec_path: Path, field_prefix: str = "engine") -> None:
    """Refuse ``extra`` keys vLLM would reject or that would override what the spec or pipeline sets.

    ``extra`` goes verbatim to ``vllm.LLM`` and becomes flags of the OpenAI server, so a typo fails
    only when the engine starts, after registration. A key duplicating a typed field is refused
    because ``extra`` is applied last and would silently win over the reviewed, typed value.
    """
    typed = [name for name in EngineSpec.model_fields if name != "extra"]
    known = engine_arg_names()
    for key in engine.extra:
        field = f"{field_prefix}.extra.{key}"
        where = {"file": spec_path, "line": _key_line(spec_path, _loc(field)), "field": field}
        if key in typed:
            raise SpecError(
                f"'{key}' is a typed engine field; in 'extra' it would override it unchecked",
                **where,
                fix=f"move it to {field_prefix}.{key}",
            )
        if key in _SET_BY_PIPELINE:
            raise SpecError(
                f"'{key}' is set by the pipeline: {_SET_BY_PIPELINE[key]}",
                **where,
                fix=f"remove {field}",
            )
        if known is not None and key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise SpecError(
                f"unknown vLLM engine argument '{key}'{hint}",
                **where,
                fix="use a field of vllm.EngineArgs or a keyword of vllm.LLM "
                "(see `vllm serve --help`, with dashes as underscores)",
            )


def check_source(
    source: ModelSource, *, project_root: Path, spec_path: Path, field_prefix: str = "source"
) -> tuple[Path, str | None]:
    """``locate_source`` with the YAML line of the failing field added; returns its path and digest.

    The GGUF digest is remembered per process, so the engine that later resolves the same file does
    not hash it again.
    """
    try:
        return locate_source(
            source, project_root=project_root, spec_path=spec_path, field_prefix=field_prefix
        )
    except SpecError as exc:
        if exc.line is not None or exc.field is None:
            raise
        raise SpecError(
            exc.reason,
            file=exc.file,
            line=_key_line(spec_path, _loc(exc.field)),
            field=exc.field,
            fix=exc.fix,
        ) from None


def check_app_sources(app: AppSpec) -> dict[str, str | None]:
    """Check the app's model and guard (weights and engine arguments) before anything is registered.

    Returns the sha256 of each GGUF weight file by role (``model``, and ``guard`` when the app has
    one), None for a Hugging Face directory, so the caller can record what was checked.
    """
    if app.model.engine.backend == "vllm":  # the names checked are vLLM's
        check_engine(app.model.engine, spec_path=app.model_path)
    _, model_sha = check_source(app.model.source, project_root=app.root, spec_path=app.model_path)
    digests: dict[str, str | None] = {"model": model_sha}
    if app.guard is not None and app.guard_path is not None:
        if app.guard.backend == "vllm":  # the transformers backend never reads engine
            check_engine(app.guard.engine, spec_path=app.guard_path)
        _, digests["guard"] = check_source(app.guard.source, project_root=app.root, spec_path=app.guard_path)
    return digests
