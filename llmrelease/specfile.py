"""Load a YAML file into a pydantic model, turning validation errors into file:line: field errors.

YAML is composed once to keep node positions, so a pydantic error location (a tuple of keys and
indices) can be mapped back to the line a person has to edit. A key written twice in one mapping is
an error (PyYAML keeps the last one silently), and so is a byte that is not UTF-8.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from llmrelease.errors import SpecError
from llmrelease.inputfiles import read_text

__all__ = ["load_spec", "validation_to_spec_error", "parse_yaml", "compose_file", "UniqueKeyLoader"]

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


def _without_tags(root: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop a tagged union's tag from an error location (``policy.classifier.threshold`` is the
    file's ``policy.threshold``): a part that is no key of its mapping while the next part is one,
    or that is one of the mapping's values (the tag itself, as in ``kind: classifier``)."""
    node, out = root, []
    for i, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            keys = {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
            values = {v.value for v in keys.values() if isinstance(v, yaml.ScalarNode)}
            if str(part) not in keys and (
                (i + 1 < len(loc) and str(loc[i + 1]) in keys) or str(part) in values
            ):
                continue
            node = keys.get(str(part))
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
        out.append(part)
    return tuple(out)


def _node_paths(root: yaml.Node) -> dict[int, tuple[Any, ...]]:
    """The key path of every node of a composed document (an aliased node keeps its first path)."""
    out: dict[int, tuple[Any, ...]] = {}
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(root, ())]
    while stack:
        node, loc = stack.pop()
        if id(node) in out:
            continue
        out[id(node)] = loc
        if isinstance(node, yaml.MappingNode):
            stack.extend((v, (*loc, k.value)) for k, v in node.value if isinstance(k, yaml.ScalarNode))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, (*loc, i)) for i, v in enumerate(node.value))
    return out


class DuplicateKeyError(yaml.constructor.ConstructorError):
    def __init__(self, key: Any, loc: tuple[Any, ...], first: yaml.Node, second: yaml.Node) -> None:
        self.key, self.loc, self.first, self.second = key, loc, first, second
        super().__init__(problem=f"duplicate key {key!r}", problem_mark=second.start_mark)


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice, naming the second occurrence.

    Keys brought in by a merge (``<<: *base``) may be overridden, as YAML intends; only keys written
    twice in the same mapping are refused. ``key_paths`` (filled by :func:`parse_yaml`) names where
    the mapping sits in the document."""

    key_paths: dict[int, tuple[Any, ...]] | None = None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own error says so below
                    continue
                if first is not None:
                    loc = (self.key_paths or {}).get(id(node), ())
                    raise DuplicateKeyError(key, (*loc, key), first, key_node)
                seen[key] = key_node
        return super().construct_mapping(node, deep)


# YAML 1.2 booleans: only true/false. PyYAML follows YAML 1.1, where a bare ``on``, ``off``, ``yes``
# or ``no`` is a boolean, so ``on: lower_bound`` (a gate's field) would arrive as the key True and
# ``on: value`` as a boolean key; a category named ``no`` would become False.
UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_yaml(text: str, path: Path) -> tuple[yaml.Node | None, Any]:
    """The composed node tree (for line numbers) and the data, in one parse. A YAML error or a
    duplicate key is a SpecError with the line and, for a duplicate, the key's path."""
    loader = UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        loader.key_paths = _node_paths(root)
        return root, loader.construct_document(root)
    except DuplicateKeyError as exc:
        raise SpecError(
            f"duplicate key '{exc.key}' (first on line {exc.first.start_mark.line + 1}); YAML keeps only "
            "the last one, so the other would be silently ignored",
            file=path,
            line=exc.second.start_mark.line + 1,
            field=_field_name(exc.loc),
            fix="remove one of the two, or merge them",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise SpecError(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=path, line=line) from None
    finally:
        loader.dispose()


def compose_file(path: Path) -> yaml.Node | None:
    """The node tree of a spec already loaded (for the line of a field); None if it cannot be read."""
    try:
        return parse_yaml(read_text(path), path)[0]
    except SpecError:
        return None


def _spans(node: yaml.Node, line0: int) -> bool:
    end = node.end_mark
    return node.start_mark.line <= line0 and (line0 < end.line or (line0 == end.line and end.column > 0))


def _field_at_line(root: yaml.Node | None, line0: int) -> str | None:
    """The deepest key path whose entry covers 0-based line ``line0``."""
    node, loc = root, ()
    while node is not None:
        nxt = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and (
                    k.start_mark.line == line0 or (k.start_mark.line <= line0 and _spans(v, line0))
                ):
                    nxt, loc = v, (*loc, k.value)
                    break
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                if _spans(v, line0):
                    nxt, loc = v, (*loc, i)
                    break
        node = nxt
    return _field_name(loc) or None


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
    loc = _without_tags(root, loc[:-1]) + loc[-1:] if err["type"] == "missing" else _without_tags(root, loc)
    node = _node_for(root, loc)
    line = node.start_mark.line + 1 + line_offset if node is not None else None
    reason = err["msg"].removeprefix("Value error, ")  # our own validators' messages stand alone
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
        text = read_text(path)
    except SpecError as exc:
        if exc.line is None or exc.field is not None:
            raise
        # A bad byte: name the field it sits in, read from the text with the byte replaced.
        field = None
        try:
            replaced = path.read_bytes().decode("utf-8", errors="replace")
            field = _field_at_line(parse_yaml(replaced, path)[0], exc.line - 1)
        except (OSError, SpecError):
            pass
        raise SpecError(exc.reason, file=exc.file, line=exc.line, field=field, fix=exc.fix) from None
    root, data = parse_yaml(text, path)
    if not isinstance(data, dict):
        raise SpecError("expected a mapping of fields at the top level", file=path, line=1)
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise validation_to_spec_error(exc, path, root) from None
