"""vLLM's process layout: one process on a CPU host, vLLM's default on an accelerator, and a value
the user set always kept (pure logic; the e2e release's shared engine is checked to run in-process
in tests/test_release_e2e.py)."""

from __future__ import annotations

from llmrelease.engines.process_layout import VAR, single_process_on_cpu


def test_a_cpu_host_gets_the_single_process_layout() -> None:
    env: dict[str, str] = {}
    single_process_on_cpu(env, accelerator=False)
    assert env == {VAR: "0"}


def test_an_accelerator_keeps_vllms_default() -> None:
    env: dict[str, str] = {}
    single_process_on_cpu(env, accelerator=True)
    assert env == {}


def test_the_users_value_wins() -> None:
    env = {VAR: "1"}
    single_process_on_cpu(env, accelerator=False)
    assert env == {VAR: "1"}
