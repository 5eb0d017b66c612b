"""Registration and promotion cannot go half-way, nor race.

A real process (tests/fault_worker.py: llmrelease's registration, run, verdict and promotion code
on a real MLflow store) is SIGKILLed at every step boundary (``llmrelease.faults.POINTS``), then the
release is run again; after each kill and each re-run the store must hold: model and prompt aliases
agree, no unfinished intent, no duplicate versions, no run left RUNNING by a dead process, and the
champion is only ever a version that was compared with the champion of its moment.

Two releases that both passed their gates against the same champion race for promotion with the
window between compare and move held open: one promotes, the other exits 3, every round.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmrelease.faults import POINTS
from llmrelease.mlflow_registry import CHALLENGER, CHAMPION, PREVIOUS, TAG, MlflowRegistry
from tests.conftest import copy_project
from tests.fault_worker import APP, prompt_variant, release_once

pytestmark = pytest.mark.flow

WORKER = Path(__file__).with_name("fault_worker.py")
REPO = WORKER.parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMRELEASE_FAULT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["LLMRELEASE_NO_LIFELINE"] = "1"
    return {**env, **extra}


def _worker(project: Path, uri: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(WORKER), str(project), uri],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_consistent(registry: MlflowRegistry, *, others_running: bool = False) -> None:
    """What must hold after any crash, once the store has been read through llmrelease.
    ``others_running``: another release may be writing meanwhile (its run is RUNNING, legitimately),
    so the aliases are read under the app's lock, as ``status`` reads them: a reader between a
    writer's model-alias and prompt-alias moves would otherwise see them disagree."""
    from llmrelease.locks import app_lock

    with app_lock(registry.tracking_uri, APP) if others_running else contextlib.nullcontext():
        _assert_consistent(registry, others_running=others_running)


def _assert_consistent(registry: MlflowRegistry, *, others_running: bool) -> None:
    assert registry.read_intent(APP) is None, "an unfinished alias move was left behind"
    for alias in (CHAMPION, CHALLENGER, PREVIOUS):
        model = registry.alias(APP, alias)
        prompt = registry.prompt_alias(APP, alias)
        assert (model.prompt_version if model else None) == prompt, (alias, model, prompt)
    versions = registry.versions(APP)
    keys = [v.candidate_key for v in versions]
    assert len(keys) == len(set(keys)), f"duplicate versions of one candidate: {keys}"
    running = registry.client.search_runs(
        [registry.experiment_id(APP)], "attributes.status = 'RUNNING'", max_results=100
    )
    assert others_running or not running, "a run of a dead release is still RUNNING"
    champion = registry.alias(APP, CHAMPION)
    if champion is not None:
        assert champion.tags.get(TAG + "verdict") == "passed" and champion.tags.get(TAG + "promoted_at")
        challenger = registry.alias(APP, CHALLENGER)
        assert challenger is None or challenger.version != champion.version


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, str, MlflowRegistry]:
    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    assert release_once(project, uri) == 0  # v1 becomes the first champion
    return project, uri, MlflowRegistry(uri)


KILL_POINTS = [p for p in POINTS if p != "register.waiting_for_lock"]


def test_a_release_killed_at_any_step_is_repaired_by_the_next(store) -> None:
    from llmrelease.tasks.promotion.status import app_status

    project, uri, registry = store
    prompt = project / "registry" / APP / "prompt.yaml"
    for k, point in enumerate(KILL_POINTS):
        before = registry.alias(APP, CHAMPION)
        prompt_variant(project, prompt, f"kill-{k}")
        killed = _worker(project, uri, LLMRELEASE_FAULT_KILL_AT=point)
        assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-2000:])

        status = app_status(registry, APP)  # what a person runs next: it finishes the move first
        assert not status["disagreements"], (point, status)
        assert_consistent(registry)
        after_kill = registry.alias(APP, CHAMPION)
        intent_done = POINTS.index(point) >= POINTS.index("promote.intent_written")
        assert after_kill.version != before.version if intent_done else after_kill.version == before.version

        assert release_once(project, uri) == 0, point  # the re-run: promoted, or already champion
        assert_consistent(registry)
        champion = registry.alias(APP, CHAMPION)
        assert champion.version != before.version, point
        assert registry.alias(APP, PREVIOUS).version == before.version, point
        assert champion.tags[TAG + "promoted_by_run"] == champion.eval_run_id
    assert len(registry.versions(APP)) == 1 + len(KILL_POINTS)


def test_two_releases_of_the_same_content_at_once_make_one_version(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Both hold at the lock's door; opened together, they find-or-create in turn.
    pace = tmp_path / "pace"
    pace.mkdir()
    env = {"LLMRELEASE_FAULT_PAUSE_AT": "register.waiting_for_lock", "LLMRELEASE_FAULT_DIR": str(pace)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(project), uri],
            env=_env(**env),
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    _wait_for(pace / "register.waiting_for_lock.reached")
    time.sleep(1.0)  # both are (very likely) at the door; the lock decides the order either way
    (pace / "register.waiting_for_lock.go").touch()
    codes = sorted(p.wait(timeout=300) for p in procs)
    assert codes == [0, 0], [p.stderr.read()[-3000:] for p in procs]
    registry = MlflowRegistry(uri)
    assert len(registry.versions(APP)) == 1
    assert len(registry._prompt_versions(f"{APP}-prompt")) == 1
    assert codes == [0, 0]  # one promoted it, the other found it already champion
    assert_consistent(registry)


def _wait_for(path: Path, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited {proc.returncode} before {path.name}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.02)


ROUNDS = 20


def test_two_passing_releases_racing_for_promotion_one_wins_one_exits_3_every_time(store, tmp_path: Path):
    project, uri, registry = store
    where = tmp_path / "race"
    points = "promote.gates_passed,promote.intent_written"
    env = {"LLMRELEASE_FAULT_PAUSE_AT": points, "LLMRELEASE_FAULT_NOTE_AT": "promote.waiting_for_lock"}
    procs = {
        role: subprocess.Popen(
            [sys.executable, str(WORKER), str(project), uri, "--race", role, str(ROUNDS), str(where)],
            env=_env(**env),
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in ("a", "b")
    }
    a, b = procs["a"], procs["b"]
    try:
        for k in range(ROUNDS):
            da, db = where / str(k) / "a", where / str(k) / "b"
            before = registry.alias(APP, CHAMPION).version
            # Both registered against the same champion and passed their gates.
            _wait_for(da / "promote.gates_passed.reached", a)
            _wait_for(db / "promote.gates_passed.reached", b)
            # a compares (champion unchanged) and writes its intent: the window is open.
            (da / "promote.gates_passed.go").touch()
            _wait_for(da / "promote.intent_written.reached", a)
            # b asks for the promotion inside a's window...
            (db / "promote.gates_passed.go").touch()
            (db / "promote.intent_written.go").touch()  # should b ever get there, let it through
            _wait_for(db / "promote.waiting_for_lock.reached", b)
            time.sleep(0.1)
            # ...and a finishes.
            (da / "promote.intent_written.go").touch()
            _wait_for(where / str(k) / "a.exit", a)
            _wait_for(where / str(k) / "b.exit", b)
            codes = ((where / str(k) / "a.exit").read_text(), (where / str(k) / "b.exit").read_text())
            assert codes == ("0", "3"), f"round {k}: exit codes {codes}"
            champion, previous = registry.alias(APP, CHAMPION), registry.alias(APP, PREVIOUS)
            assert previous.version == before and champion.version != before, f"round {k}"
            challenger = registry.alias(APP, CHALLENGER)  # b's, or none if a's was the last recorded
            assert challenger is None or challenger.version not in (champion.version, before)
            assert_consistent(registry, others_running=True)  # both workers go on to the next round
        assert a.wait(timeout=60) == 0 and b.wait(timeout=60) == 0
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
    assert len(registry.versions(APP)) == 1 + 2 * ROUNDS


@pytest.mark.e2e
@pytest.mark.reuse_generations
@pytest.mark.timeout(900)
def test_a_real_release_killed_between_the_model_and_the_prompt_alias_is_completed_by_the_next(
    tmp_path: Path,
) -> None:
    """The issue's case, end to end: `llmrelease release` on vLLM, SIGKILLed after the model's
    champion moved and before the prompt's. The store is half-way; the next release completes the
    promotion before anything else, and says so."""
    project = copy_project(tmp_path / "project", guard=False, shadow=False)
    cli = [sys.executable, "-m", "llmrelease.cli", "release", APP, "-p", str(project), "--json"]
    env = _env(LLMRELEASE_FAULT_KILL_AT="promote.champion_model_moved")
    env.pop("LLMRELEASE_NO_LIFELINE")
    env.pop("MLFLOW_TRACKING_URI", None)
    killed = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=800)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    registry = MlflowRegistry(f"sqlite:///{project / '.llmrelease' / 'mlflow.db'}")
    assert registry.alias(APP, CHAMPION).version == "1"  # the model's alias moved...
    assert registry.prompt_alias(APP, CHAMPION) is None  # ...the prompt's did not
    assert registry.read_intent(APP)["champion"]["version"] == "1"

    again = subprocess.run(cli, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    outcome = json.loads(again.stdout)
    assert outcome["status"] == "already_champion"
    assert any("completed an unfinished promotion of v1" in n for n in outcome["notes"]), outcome["notes"]
    assert registry.prompt_alias(APP, CHAMPION) == 1
    assert registry.alias(APP, CHAMPION).tags[TAG + "promoted_at"]
    assert_consistent(registry)


def test_an_unfinished_move_is_dropped_when_a_person_moved_the_alias_since(store, tmp_path: Path) -> None:
    """A person's later decision wins over a dead process's earlier one."""
    from llmrelease.tasks.promotion.status import app_status

    project, uri, registry = store
    prompt_variant(project, project / "registry" / APP / "prompt.yaml", "dropped")
    killed = _worker(project, uri, LLMRELEASE_FAULT_KILL_AT="promote.previous_prompt_moved")
    assert killed.returncode == -signal.SIGKILL
    assert registry.read_intent(APP) is not None
    registry.set_model_alias(APP, PREVIOUS, "2")  # meanwhile, by hand in the MLflow UI
    status = app_status(registry, APP)
    assert any(n.startswith("dropped an unfinished promotion of v2") for n in status["notes"]), status
    assert registry.alias(APP, CHAMPION).version == "1" and registry.alias(APP, PREVIOUS).version == "2"
    assert registry.prompt_alias(APP, PREVIOUS) == 2  # brought in line with the model's alias
    assert_consistent(registry)
