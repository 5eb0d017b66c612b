"""Load a YAML file into a pydantic model, turning validation errors into file:line: field errors.

YAML is composed once to keep node positions, so a pydantic error location (a tuple of keys and
indices) can be mapped back to the line a person has to edit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from llmrelease.errors import SpecError

__all__ = ["load_spec", "validation_to_spec_error"]

M = TypeVar("M", bound=BaseModel)


def _node_for(root: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """Walk the composed YAML tree along a pydantic error location; return the deepest node found."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    nxt = value
                    break
            if nxt is None:
                return node
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def _field_name(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def validation_to_spec_error(
    exc: ValidationError, path: Path, root: yaml.Node | None, *, line_offset: int = 0
) -> SpecError:
    """Report the first validation error with its file, line and dotted field path."""
    err = exc.errors()[0]
    # Pydantic appends the validator kind (e.g. a tagged-union tag) to locations; keep only real keys.
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    node = _node_for(root, loc)
    line = node.start_mark.line + 1 + line_offset if node is not None else None
    reason = err["msg"]
    if err["type"] == "extra_forbidden":
        reason = "unknown field (typo?)"
    elif err["type"] == "missing":
        reason = "required field is missing"
    if "input" in err and err["type"] not in ("missing", "extra_forbidden"):
        shown = repr(err["input"])
        if len(shown) <= 80:
            reason += f", got {shown}"
    more = len(exc.errors()) - 1
    if more:
        reason += f" (and {more} more error{'s' if more > 1 else ''})"
    return SpecError(reason, file=path, line=line, field=_field_name(loc) or None)


def load_spec(path: Path, model: type[M], *, context: dict[str, Any] | None = None) -> M:
    """Parse and validate one YAML spec file; every failure is a SpecError naming file, line and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("file not found", file=path) from None
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise SpecError(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=path, line=line) from None
    if not isinstance(data, dict):
        raise SpecError("expected a mapping of fields at the top level", file=path, line=1)
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise validation_to_spec_error(exc, path, root) from None
