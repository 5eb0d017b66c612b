"""The per-app registry lock: exclusive across threads and processes, given back when its holder
dies (kill -9), and the Prefect global-concurrency-limit kind against a real Prefect server."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llmrelease.locks import app_lock, lock_place


def _exclusive(uri: str, app: str, workers: int = 4, rounds: int = 5) -> int:
    """Run ``workers`` threads that each take the lock ``rounds`` times; the most holders at once."""
    inside, most, guard = [0], [0], threading.Lock()

    def work() -> None:
        for _ in range(rounds):
            with app_lock(uri, app, timeout=120):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.01)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return most[0]


def test_a_sqlite_store_is_locked_per_app_beside_the_database(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("LLMRELEASE_REGISTRY_LOCK", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    place = lock_place(uri, "faq bot/x")
    assert place.kind == "file" and place.where == str(tmp_path / "mlflow.db.locks" / "faq_bot_x.lock")
    assert _exclusive(uri, "app") == 1
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert lock_place(uri, "app").kind == "file"  # a SQLite store is always locked on its file system
    assert lock_place("http://mlflow:5000", "app").kind == "prefect"
    monkeypatch.delenv("PREFECT_API_URL")
    assert lock_place("http://mlflow:5000", "app").kind == "file"  # one machine, under the cache dir


HOLD = """
import sys, time
from llmrelease.locks import app_lock
with app_lock(sys.argv[1], "app"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_killed_holder_gives_the_lock_back_at_once(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, uri], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        from llmrelease.errors import InfrastructureError

        with pytest.raises(InfrastructureError, match="held for more"), app_lock(uri, "app", timeout=0.5):
            pass
        holder.kill()  # SIGKILL: no finally, no atexit
        holder.wait()
        with app_lock(uri, "app", timeout=30):
            pass
    finally:
        holder.kill()


@pytest.mark.flow
def test_the_prefect_kind_is_exclusive_across_holders(monkeypatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    monkeypatch.setenv("LLMRELEASE_REGISTRY_LOCK", "prefect")
    with prefect_test_harness(server_startup_timeout=120):
        uri = "http://mlflow.invalid:5000"
        assert lock_place(uri, "app").where == "llmrelease-registry-app"
        assert _exclusive(uri, "app", workers=3, rounds=3) == 1
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name("llmrelease-registry-app")
        assert (limit.limit, limit.active_slots) == (1, 0)  # created once, every slot given back
