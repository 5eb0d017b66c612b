"""The import direction holds: no module cycle, and the CLI and specs start without heavy imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "llmrelease"


def _imports(tree: ast.Module) -> set[str]:
    """Every llmrelease import in a module, lazy ones included; type-checking-only blocks excluded."""
    out: set[str] = set()
    skip: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.If)
            and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
        ):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmrelease"):
            out.update(f"{node.module}.{a.name}" for a in node.names)
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("llmrelease"))
    return out


def test_no_module_imports_itself_back() -> None:
    modules = {
        ".".join(f.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): f
        for f in PACKAGE.rglob("*.py")
        if "metrics" not in f.parts
    }
    graph = {m: _imports(ast.parse(f.read_text())) & set(modules) for m, f in modules.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m == goal:
                return True
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
        return False

    cycles = sorted(m for m in graph if reaches(m, m) and not m.endswith(".__init__"))
    # A package's __init__ is reached through its own submodules' names: ignore the package itself.
    cycles = [m for m in cycles if not any(o.startswith(m + ".") for o in modules)]
    assert cycles == []


def test_nothing_imports_the_cli_or_a_flow_but_the_front_doors() -> None:
    allowed = {"cli.py", "api.py"}
    for f in PACKAGE.rglob("*.py"):
        if f.name in allowed or "flows" in f.parts:
            continue
        found = {
            m
            for m in _imports(ast.parse(f.read_text()))
            if m.startswith(("llmrelease.cli", "llmrelease.flows"))
        }
        assert not found, f"{f.relative_to(PACKAGE)} imports {found}"


def test_the_cli_and_the_specs_import_no_engine_registry_or_orchestrator() -> None:
    code = (
        "import sys, llmrelease.cli, llmrelease.specs, llmrelease.catalogue, llmrelease.preflight; "
        "print(sorted(m for m in ('vllm', 'torch', 'mlflow', 'prefect', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
