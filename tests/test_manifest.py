"""The release manifest and its score parts: pure, on the demo project's specs."""

from __future__ import annotations

from pathlib import Path

from llmrelease.manifest import build_manifest, changed_parts, score_parts
from llmrelease.project import load_app
from llmrelease.specs import content_hash
from llmrelease.tasks.evaluation.evalsets import load_evalsets

APP = "support-triage"


def _parts(project: Path) -> dict[str, dict[str, str]]:
    spec = load_app(project, APP)
    return score_parts(spec, load_evalsets(spec))


def test_unchanged_inputs_have_equal_score_parts_and_manifests(project: Path) -> None:
    spec = load_app(project, APP)
    evalsets = load_evalsets(spec)
    one = build_manifest(spec, evalsets, engine_factory="vllm", weights={"model": "w"})
    two = build_manifest(spec, load_evalsets(spec), engine_factory="vllm", weights={"model": "w"})
    assert content_hash(one) == content_hash(two)
    assert changed_parts(one["score_parts"], two["score_parts"]) == []
    other = build_manifest(spec, evalsets, engine_factory="x:y", weights={"model": "w"})
    assert content_hash(other) != content_hash(one) and other["engine"]["factory"] == "x:y"


def test_each_changed_part_is_named_in_a_stable_order(project: Path) -> None:
    before = _parts(project)
    card = project / "evalsets" / APP / "tickets.card.yaml"
    card.write_text(card.read_text().replace("version: tickets-v1", "version: tickets-v2"))
    guard = project / "registry" / APP / "guard.yaml"
    guard.write_text(guard.read_text().replace("check: [prompt, response]", "check: [response]"))
    rows = project / "evalsets" / APP / "redteam.jsonl"
    rows.write_text("\n".join(rows.read_text().splitlines()[:4]) + "\n")
    assert changed_parts(before, _parts(project)) == ["evalsets", "evalset cards", "the guard"]


def test_a_run_without_score_parts_is_never_reused(project: Path) -> None:
    assert changed_parts(None, _parts(project)) == ["the champion's run records no score key"]
    assert changed_parts({}, _parts(project)) == ["evalsets"]  # an evalset the champion never saw
