"""The trigger flows' logic without servers: which apps a push touches, Git diffs and worktrees at
a commit, and what a champion move is (rollout or override) on a real MLflow SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrelease import gitrepo
from llmrelease.errors import InputError
from llmrelease.flows.on_push import changed_files
from llmrelease.mlflow_registry import TAG, MlflowRegistry
from llmrelease.tasks.promotion.alias_change import classify, record_alias_change
from llmrelease.tasks.triggers.push import apps_touched
from tests.conftest import git

APPS = ["faq-bot", "support-triage"]


@pytest.mark.parametrize(
    ("paths", "subdir", "expected"),
    [
        (["registry/support-triage/prompt.yaml"], "", ["support-triage"]),
        (["evalsets/faq-bot/golden.jsonl", "README.md"], "", ["faq-bot"]),
        (["registry/support-triage/gates.yaml", "evalsets/faq-bot/x.card.yaml"], "", APPS),
        (["README.md", "llmrelease/cli.py", "registry/README.md"], "", []),
        (["registry/deleted-app/prompt.yaml"], "", []),  # not an app at the pushed commit
        (["apps/registry/faq-bot/model.yaml"], "apps", ["faq-bot"]),
        (["registry/faq-bot/model.yaml"], "apps", []),  # outside the project's subdirectory
    ],
)
def test_apps_touched(paths: list[str], subdir: str, expected: list[str]) -> None:
    assert apps_touched(paths, APPS, subdir=subdir) == expected


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str, str]:
    root = tmp_path / "repo"
    (root / "registry" / "faq-bot").mkdir(parents=True)
    (root / "registry" / "faq-bot" / "prompt.yaml").write_text("version: one\n")
    (root / "README.md").write_text("hi\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one")
    first = git(root, "rev-parse", "HEAD")
    (root / "registry" / "faq-bot" / "prompt.yaml").write_text("version: two\n")
    git(root, "commit", "-qam", "two")
    return root, first, git(root, "rev-parse", "HEAD")


def test_git_diff_is_preferred_over_the_payload(repo) -> None:
    root, first, second = repo
    paths, source = changed_files(root, first, second, ["something/else"], True)
    assert paths == ["registry/faq-bot/prompt.yaml"] and source.startswith("git diff")
    # Git does not know `before` (a force push, a shallow clone): the payload's list is used...
    paths, source = changed_files(root, "f" * 40, second, ["registry/faq-bot/x"], True)
    assert paths == ["registry/faq-bot/x"] and source == "the push payload"
    # ...unless GitHub may have cut it: then every app is released.
    assert changed_files(root, "f" * 40, second, ["registry/faq-bot/x"], False)[0] is None


def test_at_commit_reads_an_older_commit_from_a_worktree_and_cleans_up(repo) -> None:
    root, first, second = repo
    with gitrepo.at_commit(root, first) as tree:
        assert tree != root
        assert (tree / "registry" / "faq-bot" / "prompt.yaml").read_text() == "version: one\n"
    assert not tree.exists()
    assert "worktree" not in git(root, "worktree", "list").split("\n", 1)[-1]
    assert (root / "registry" / "faq-bot" / "prompt.yaml").read_text() == "version: two\n"
    assert git(root, "rev-parse", "HEAD") == second  # the checkout did not move
    with gitrepo.at_commit(root, second) as tree:
        assert tree == root  # HEAD already: the working tree itself
    with gitrepo.at_commit(root, None) as tree:
        assert tree == root


def test_at_commit_refuses_a_commit_the_checkout_does_not_have(repo, tmp_path: Path) -> None:
    root, _, _ = repo
    with (
        pytest.raises(InputError, match="is not in the project checkout"),
        gitrepo.at_commit(root, "ab" * 20),
    ):
        pass
    plain = tmp_path / "plain"
    plain.mkdir()
    with gitrepo.at_commit(plain, "ab" * 20) as tree:  # not a Git checkout: as it is
        assert tree == plain


def test_classify_fails_closed() -> None:
    assert classify({TAG + "verdict": "passed", TAG + "eval_run_id": "r"})[0] == "rollout"
    assert classify({TAG + "verdict": "passed"})[0] == "override"  # no release run to back it
    assert classify({TAG + "verdict": "failed", TAG + "eval_run_id": "r"}) == (
        "override",
        "its gates FAILED in release run r",
    )
    assert classify({})[0] == "override"


def test_champion_moves_are_recorded_as_rollout_or_flagged_override(tmp_path: Path) -> None:
    registry = MlflowRegistry(
        f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=(tmp_path / "artifacts").as_uri()
    )
    client, app = registry.client, "faq-bot"
    client.create_registered_model(app, tags={TAG + "app": app})
    gated = client.create_model_version(
        app, "s3://models/a", tags={TAG + "verdict": "passed", TAG + "eval_run_id": "run-1"}
    ).version
    failed = client.create_model_version(
        app,
        "s3://models/b",
        tags={TAG + "verdict": "failed", TAG + "eval_run_id": "run-2", TAG + "override_by": "ada"},
    ).version

    client.set_registered_model_alias(app, "champion", gated)
    rollout = record_alias_change(registry, app, "champion", gated, delivery="d-1")
    assert rollout.kind == "rollout" and rollout.record_run
    assert registry.alias(app, "champion").tags[TAG + "rollout_run"] == rollout.record_run
    assert registry.model_tags(app)[TAG + "champion_override"] == "none"

    client.set_registered_model_alias(app, "champion", failed)
    override = record_alias_change(registry, app, "champion", failed, delivery="d-2")
    assert override.kind == "override" and override.moved_by.startswith("ada")
    flag = registry.model_tags(app)[TAG + "champion_override"]
    assert f"v{failed}" in flag and "FAILED" in flag
    assert TAG + "override" in registry.alias(app, "champion").tags
    note = client.get_run(override.record_run).data.tags["mlflow.note.content"]
    assert note.startswith("MANUAL OVERRIDE") and f"llmrelease rollback {app}" in note

    # A late event for an older move, other aliases and other models record nothing.
    assert record_alias_change(registry, app, "champion", gated).kind == "superseded"
    assert record_alias_change(registry, app, "challenger", gated).kind == "ignored"
    client.create_registered_model("not-ours")
    assert record_alias_change(registry, "not-ours", "champion", "1").kind == "ignored"
    assert record_alias_change(registry, "missing", "champion", "1").kind == "ignored"
    runs = client.search_runs([registry.experiment_id(app)])
    assert sorted(r.data.tags[TAG + "kind"] for r in runs) == ["override", "rollout"]


def test_revert_policy_moves_an_unsigned_override_back_once_and_keeps_a_signed_one(tmp_path: Path) -> None:
    registry = MlflowRegistry(
        f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=(tmp_path / "artifacts").as_uri()
    )
    client, app = registry.client, "faq-bot"
    client.create_registered_model(app, tags={TAG + "app": app})

    def version(verdict: str | None, **tags: str) -> str:
        base = {TAG + "verdict": verdict, TAG + "eval_run_id": "run-x"} if verdict else {}
        return str(client.create_model_version(app, "s3://m", tags={**base, **tags}).version)

    gated, failed, unevaluated = version("passed"), version("failed"), version(None)
    signed = version("failed", **{TAG + "override_by": "ada", TAG + "override_reason": "hotfix"})
    client.set_registered_model_alias(app, "champion", gated)
    assert record_alias_change(registry, app, "champion", gated, policy="revert").kind == "rollout"

    for bad in (failed, unevaluated):
        client.set_registered_model_alias(app, "champion", bad)
        record = record_alias_change(registry, app, "champion", bad, delivery="d", policy="revert")
        assert (record.kind, record.restored) == ("reverted", gated), record
        assert registry.alias(app, "champion").version == gated
        tags = registry.versions(app)[int(bad) - 1].tags
        assert tags[TAG + "reverted_at"] and tags[TAG + "revert_run"] == record.record_run
        page = client.get_model_version(app, bad).description
        assert "REVERTED" in page and f"back to v{gated}" in page
        # The same event delivered again finds the champion moved back: nothing more happens.
        again = record_alias_change(registry, app, "champion", bad, delivery="d", policy="revert")
        assert again.kind == "superseded" and registry.alias(app, "champion").version == gated
    assert "champion again" in client.get_model_version(app, gated).description

    # Signed (who and why): flagged as an override, never moved back, and accepted from then on.
    client.set_registered_model_alias(app, "champion", signed)
    record = record_alias_change(registry, app, "champion", signed, policy="revert")
    assert (record.kind, record.signed) == ("override", True)
    assert registry.alias(app, "champion").version == signed
    assert "signed override" in client.get_model_version(app, signed).description
    client.set_registered_model_alias(app, "champion", failed)
    assert record_alias_change(registry, app, "champion", failed, policy="revert").restored == signed

    # The default policy only flags.
    client.set_registered_model_alias(app, "champion", failed)
    assert record_alias_change(registry, app, "champion", failed).kind == "override"
    assert registry.alias(app, "champion").version == failed
    kinds = [r.data.tags[TAG + "kind"] for r in client.search_runs([registry.experiment_id(app)])]
    assert sorted(kinds) == ["override", "override", "reverted", "reverted", "reverted", "rollout"]


def test_serve_refuses_a_port_in_use_before_starting_anything(tmp_path: Path) -> None:
    import socket

    from llmrelease.stack import Stack, StackConfig, StackError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = Stack(StackConfig(project=tmp_path, mlflow_port=port, prefect_port=port), say=lambda _: None)
        with pytest.raises(StackError, match=f"port {port} .* in use.*--prefect-port"):
            stack.start()
    assert stack.children == []


def test_relay_command_needs_the_prefect_api(monkeypatch) -> None:
    from typer.testing import CliRunner

    from llmrelease.cli import app

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = CliRunner().invoke(app, ["relay"])
    assert result.exit_code == 2 and "PREFECT_API_URL" in result.output


def test_a_project_in_a_subdirectory_matches_paths_relative_to_it(tmp_path: Path) -> None:
    """on-push's rule for a monorepo: Git says where the project sits; pushed paths are relative
    to the repository's top."""
    root = tmp_path / "mono"
    (root / "apps" / "registry" / "faq-bot").mkdir(parents=True)
    (root / "apps" / "registry" / "faq-bot" / "prompt.yaml").write_text("x\n")
    git(root, "init", "-q")
    assert gitrepo.subdir(root / "apps") == "apps" and gitrepo.subdir(root) == ""
    assert apps_touched(["apps/registry/faq-bot/prompt.yaml"], ["faq-bot"], subdir="apps") == ["faq-bot"]


def test_a_router_champion_is_classified_by_its_own_gates(tmp_path: Path) -> None:
    """The alias webhook fires for ``<app>.router`` too: a router its gates promoted is a rollout, one
    that failed them and was moved by hand is a flagged override, and the app's gates.yaml decides
    the router's manual_champion policy."""
    from llmrelease.flows.on_alias import manual_champion_policy
    from llmrelease.mlflow_registry import VersionInfo, router_name
    from llmrelease.tasks.gates.decisions import GateReport, GateResult
    from llmrelease.tasks.routing.promotion import RouterCandidate, record_verdict

    registry = MlflowRegistry(
        f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=(tmp_path / "artifacts").as_uri()
    )
    client, name = registry.client, router_name("faq-bot")
    client.create_registered_model(name, tags={TAG + "app": "faq-bot"})

    def judged(verdict: str) -> str:
        version = str(client.create_model_version(name, "s3://routers/r").version)
        candidate = RouterCandidate(name, VersionInfo(version, {}), True, {}, None)
        result = GateResult(name="g", metric="router.apgr", kind="absolute", value=0.7, threshold=">= 0.5",
                            verdict=verdict, evidence="")  # fmt: skip
        record_verdict(registry, candidate, GateReport([result]), run_id=f"run-{version}", threshold=-0.2,
                       target_share=0.3)  # fmt: skip
        return version

    passed, failed = judged("pass"), judged("fail")
    client.set_registered_model_alias(name, "champion", passed)
    assert record_alias_change(registry, name, "champion", passed).kind == "rollout"
    client.set_registered_model_alias(name, "champion", failed)
    override = record_alias_change(registry, name, "champion", failed)
    assert override.kind == "override" and "FAILED" in override.reason

    project = tmp_path / "project"
    (project / "registry" / "faq-bot").mkdir(parents=True)
    (project / "registry" / "faq-bot" / "gates.yaml").write_text(
        "version: g1\nmanual_champion: revert\ngates:\n  - {name: a, metric: e.s, min: 0.1}\n"
    )
    assert manual_champion_policy(project, name) == ("revert", None)
