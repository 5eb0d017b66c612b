"""Engine backends are chosen by the model spec's ``engine.backend`` through one registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrelease.engines.backends import ENGINE_BACKENDS
from llmrelease.errors import InputError
from llmrelease.project import load_app
from llmrelease.tasks.evaluation.evalsets import load_evalsets
from llmrelease.tasks.evaluation.step import evaluate

APP = "support-triage"


def _backend(project: Path, name: str) -> None:
    model = project / "registry" / APP / "model.yaml"
    text = model.read_text()
    assert "engine:\n" in text
    model.write_text(text.replace("engine:\n", f"engine:\n  backend: {name}\n", 1))


def test_the_spec_names_the_backend_the_evaluation_uses(project: Path, monkeypatch) -> None:
    monkeypatch.delenv("LLMRELEASE_ENGINE_FACTORY", raising=False)
    monkeypatch.setitem(ENGINE_BACKENDS, "zero", "llmrelease.engines.instant:instant_engine")
    _backend(project, "zero")
    spec = load_app(project, APP)
    assert spec.model.engine.backend == "zero"
    evalsets = [e for e in load_evalsets(spec) if e.name == "tickets"]
    result = evaluate(spec.model, spec.prompt, evalsets, project_root=spec.root)
    assert result.metrics["tickets.category_accuracy"] == pytest.approx(0.25)  # the zero engine's answer


def test_an_unknown_backend_is_refused_at_load_with_its_line(project: Path) -> None:
    _backend(project, "tgi")
    with pytest.raises(
        InputError, match="unknown engine backend 'tgi'; available: openai, ray, vllm"
    ) as info:
        load_app(project, APP)
    assert info.value.field == "engine.backend" and info.value.line
