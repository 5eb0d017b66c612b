"""The stack on production-shaped storage: `llmrelease serve` with its MLflow server on PostgreSQL
(a cluster this test starts with Debian's initdb/pg_ctl in a temporary directory, password
authentication) and artifacts on S3 (moto's S3 server). A signed push releases the app on a worker;
the run, its artifacts and the version land in PostgreSQL and the bucket; the promotion's alias
move and then a person's come back through MLflow's webhook and are recorded (rollout, override).
The database password never appears in a log, a command line or MLflow.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmrelease.mlflow_registry import MlflowRegistry
from tests.conftest import git
from tests.github_payloads import push_payload, signed
from tests.test_scale_e2e import small_project
from tests.test_triggers_e2e import APP, completed, free_port, running_stack

pytestmark = pytest.mark.e2e

PASSWORD = "pg-test-password-7f3a"


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if not found:
        pytest.skip(f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)")
    return found


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL cluster of its own on a free port; yields the MLflow store URI (with password).
    initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    base = Path(tempfile.mkdtemp(prefix="llmrelease-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD + "\n")
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
        shutil.chown(pwfile, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run(*cmd: str) -> None:
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr

    run(initdb, "-D", str(data), "-U", "mlflow", "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8")
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1"
    run(pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "server.log"), "-w", "start")
    try:
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=port, user="mlflow", password=PASSWORD, dbname="postgres"
        )
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE mlflow")
        conn.close()
        yield f"postgresql://mlflow:{PASSWORD}@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _tag_soon(registry: MlflowRegistry, tag: str, within_s: float = 120):
    """The champion once it carries ``tag`` (the record is written just after the flow run ends)."""
    deadline = time.monotonic() + within_s
    while tag not in (champion := registry.alias(APP, "champion")).tags:
        assert time.monotonic() < deadline, champion.tags
        time.sleep(1)
    return champion


def test_release_and_a_webhook_alias_move_on_postgres_and_s3(postgres: str, s3, tmp_path: Path) -> None:
    s3.create_bucket(Bucket="mlflow-artifacts")
    project = small_project(tmp_path / "project")
    env = {
        "LLMRELEASE_BACKEND_STORE_URI": postgres,  # the password goes by environment, never argv
        "MLFLOW_S3_ENDPOINT_URL": os.environ["MLFLOW_S3_ENDPOINT_URL"],
        "LLMRELEASE_CHUNK_ROWS": "8",
    }
    with running_stack(project, "--artifacts-destination", "s3://mlflow-artifacts/mlflow", env=env) as stack:
        before = git(project, "rev-parse", "HEAD")
        prompt = project / "registry" / APP / "prompt.yaml"
        prompt.write_text(prompt.read_text().replace("version: ", "version: pg-", 1))
        git(project, "commit", "-qam", "prompt on the postgres stack")
        after = git(project, "rev-parse", "HEAD")
        payload = push_payload(before=before, after=after, modified=[f"registry/{APP}/prompt.yaml"])
        body, headers = signed(payload, stack.github_secret)
        r = httpx.post(f"{stack.relay}/hooks/github", content=body, headers=headers, timeout=120)
        assert r.status_code == 202, r.text
        stack.wait("on-push to complete", completed(stack, "on-push", 1), timeout_s=900)
        [release] = stack.runs("release")
        assert release["state"]["type"] == "COMPLETED", release["state"]

        # The version, its run and the run's artifacts: in PostgreSQL and in the bucket.
        registry = MlflowRegistry(stack.mlflow)
        [version] = registry.versions(APP)
        assert version.tags["llmrelease.verdict"] == "passed"
        run_id = version.tags["llmrelease.eval_run_id"]
        assert registry.client.get_run(run_id).info.status == "FINISHED"
        import psycopg2

        with psycopg2.connect(postgres) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM model_versions WHERE name = %s", (APP,))
            assert cur.fetchone()[0] == 1
            cur.execute("SELECT artifact_uri FROM runs WHERE run_uuid = %s", (run_id,))
            assert cur.fetchone()[0].startswith("mlflow-artifacts:")  # served by the server, from S3
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow-artifacts").get("Contents", [])]
        assert any(k.endswith(f"{run_id}/artifacts/gate_report.json") for k in keys), keys[:20]
        assert any(k.endswith(f"{run_id}/artifacts/eval/items.json") for k in keys)

        # The few-shot prompt passes its gates on 24 tickets: promoted, and the promotion's own
        # alias move came back through MLflow's webhook as a rollout (on-alias on a worker).
        stack.wait("on-alias rollout", completed(stack, "on-alias", 1), timeout_s=300)
        assert _tag_soon(registry, "llmrelease.rollout_run").version == version.version

        # A person makes a never-evaluated version champion (the REST API the UI calls): the
        # webhook starts on-alias again, which records the move as an override.
        rest = f"{stack.mlflow}/api/2.0/mlflow"
        created = httpx.post(
            f"{rest}/model-versions/create", json={"name": APP, "source": "s3://acme/hand-made"}, timeout=120
        )
        assert created.status_code == 200, created.text
        hand = created.json()["model_version"]["version"]
        moved = httpx.post(
            f"{rest}/registered-models/alias",
            json={"name": APP, "alias": "champion", "version": hand},
            timeout=120,
        )
        assert moved.status_code == 200, moved.text
        stack.wait("on-alias override", completed(stack, "on-alias", 2), timeout_s=300)
        flagged = _tag_soon(registry, "llmrelease.override")
        assert flagged.version == hand and "never evaluated" in flagged.tags["llmrelease.override"]

    # The password reached the MLflow server through its environment only.
    logs = project / ".llmrelease" / "serve"
    for f in logs.rglob("*"):
        if f.is_file():
            assert PASSWORD not in f.read_text(errors="replace"), f
    assert all(PASSWORD not in line for line in stack.output)
    with psycopg2.connect(postgres) as conn, conn.cursor() as cur:
        for table in ("tags", "params", "model_version_tags", "registered_model_tags"):
            cur.execute(f"SELECT count(*) FROM {table} WHERE value LIKE %s", (f"%{PASSWORD}%",))
            assert cur.fetchone()[0] == 0, table
