"""Build the classifier input exactly as Llama Guard expects it.

Two ways, chosen by the guard spec's ``prompt_format``:

* the checkpoint's own chat template, when it is a guard template (Llama Guard 3 and 4 tokenizers
  ship one that writes the task, the categories and the conversation itself);
* the published Llama Guard 3 prompt (``llama_guard_3_text``), placed as the single user turn of the
  checkpoint's chat template when it has one (that is what Llama Guard's template produces), or
  used as raw text when it has none.

Only the last user message and the response are classified: system prompts and few-shot examples
are the app's own text, not user input.
"""

from __future__ import annotations

from typing import Any, Literal

from llmrelease.specs import LLAMA_GUARD_3_CATEGORIES

__all__ = ["Turn", "guard_conversation", "llama_guard_3_text", "render_guard_input", "is_guard_template"]

Turn = dict[str, str]
Role = Literal["prompt", "response"]

_TASK = (
    "Task: Check if there is unsafe content in '{role}' messages in conversations according our "
    "safety policy with the below categories."
)
_INSTRUCTIONS = (
    "Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories."
)


def guard_conversation(messages: list[Turn], response: str | None = None) -> list[Turn]:
    """The turns to classify: the last user message, then the assistant's response if given."""
    last_user = next((m for m in reversed(messages) if m["role"] == "user"), None)
    turns = [{"role": "user", "content": last_user["content"] if last_user else ""}]
    if response is not None:
        turns.append({"role": "assistant", "content": response})
    return turns


def llama_guard_3_text(conversation: list[Turn], categories: list[tuple[str, str, str]]) -> str:
    """The published Llama Guard 3 prompt. ``categories`` are (code, name, description); the role
    checked is the agent when the conversation ends with an assistant turn, else the user."""
    role = "Agent" if conversation[-1]["role"] == "assistant" else "User"
    cat_lines = []
    for code, name, description in categories:
        cat_lines.append(f"{code}: {name}." if not name.endswith(".") else f"{code}: {name}")
        if description:
            cat_lines.append(description.strip())
    turns = "\n\n".join(
        f"{'Agent' if t['role'] == 'assistant' else 'User'}: {t['content']}" for t in conversation
    )
    return (
        _TASK.format(role=role)
        + "\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n"
        + "\n".join(cat_lines)
        + "\n<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n"
        + turns
        + "\n\n<END CONVERSATION>\n\n"
        + _INSTRUCTIONS.format(role=role)
    )


def is_guard_template(template: str | None) -> bool:
    """Llama Guard templates write the category block themselves."""
    return bool(template) and "UNSAFE CONTENT CATEGORIES" in template.upper()


def render_guard_input(
    tokenizer: Any,
    conversation: list[Turn],
    categories: list[tuple[str, str, str]],
    prompt_format: str = "auto",
) -> str:
    """The full classifier input text, special tokens included (tokenize it without adding more)."""
    template = getattr(tokenizer, "chat_template", None)
    use_template = prompt_format == "chat_template" or (
        prompt_format == "auto" and is_guard_template(template)
    )
    if use_template:
        if not template:
            raise ValueError(
                "prompt_format 'chat_template' but the checkpoint's tokenizer has no chat template"
            )
        # The template carries the standard taxonomy; a custom one goes in as ``categories`` (the
        # keyword Llama Guard 3's template reads: a dict of code -> name).
        extra: dict[str, Any] = {}
        if [(c, n) for c, n, _ in categories] != list(LLAMA_GUARD_3_CATEGORIES):
            extra["categories"] = {code: name for code, name, _ in categories}
        try:
            return tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True, **extra
            )
        except Exception:  # noqa: BLE001 - Llama Guard 3 1B's template wants typed content parts
            typed = [
                {"role": t["role"], "content": [{"type": "text", "text": t["content"]}]} for t in conversation
            ]
            return tokenizer.apply_chat_template(typed, tokenize=False, add_generation_prompt=True, **extra)
    text = llama_guard_3_text(conversation, categories)
    if template:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return text
