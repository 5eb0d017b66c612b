"""``llmrelease serve``: the local stack for real use, started and stopped as one.

Prefect server, MLflow tracking server (UI, SQLite store by default: the same store the CLI uses),
the deployments from prefect.yaml, one worker per pool (cpu, gpu) and the webhook relay, each a
child process in its own process group with its log under ``<project>/.llmrelease/serve/logs/``.
An existing Prefect or MLflow server is used instead of starting one when its URL is given.
Stopping sends SIGTERM to every group, waits, then SIGKILLs what is left (a Prefect worker may
ignore SIGTERM for seconds).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from llmrelease.errors import InputError, LLMReleaseError
from llmrelease.tasks.triggers.relay.app import GITHUB_SECRET_ENV, MLFLOW_SECRET_ENV

__all__ = ["Stack", "StackConfig", "StackError", "POOLS"]

POOLS = ("cpu", "gpu")
WEBHOOK_NAME = "llmrelease-relay"
ALIAS_EVENTS = ["model_version_alias.created", "model_version_alias.deleted"]
_BIN = Path(sys.executable).parent


class StackError(LLMReleaseError):
    exit_code = 1


@dataclass
class StackConfig:
    project: Path
    host: str = "127.0.0.1"
    prefect_port: int = 4200
    mlflow_port: int = 5000
    relay_port: int = 8787
    prefect_api_url: str | None = None
    """An existing Prefect API (``http://host:4200/api``): no Prefect server is started."""
    mlflow_uri: str | None = None
    """An existing MLflow tracking server (``http://host:5000``): no MLflow server is started."""
    backend_store_uri: str | None = field(default=None, repr=False)
    """The started MLflow server's store (``postgresql://user:pw@host/db``; may hold a password, so
    it goes to the server in its environment, never on its command line or in a log). Default: the
    project's SQLite store, the one the CLI uses."""
    artifacts_destination: str | None = None
    """Where the started MLflow server keeps artifacts (``s3://bucket/prefix``; with
    ``MLFLOW_S3_ENDPOINT_URL`` for an S3-compatible store). Default: ``<project>/.llmrelease/artifacts``."""
    public_relay_url: str | None = None
    """How MLflow reaches the relay, when not at host:relay_port (a tunnel, another host)."""
    prefect_file: Path | None = None
    worker_poll_s: int = 5

    @property
    def home(self) -> Path:
        return self.project / ".llmrelease" / "serve"


def _secret_file(path: Path, make: Callable[[], str]) -> str:
    """A secret kept across restarts, readable by its owner only, never printed."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Stack:
    config: StackConfig
    say: Callable[[str], None] = print
    children: list[_Child] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------ start

    def _check_ports(self) -> None:
        """Fail before starting anything when a port is taken: otherwise the health check could find
        someone else's server there and the stack would quietly talk to it."""
        c = self.config
        wanted = {"relay": c.relay_port}
        if c.prefect_api_url is None:
            wanted["Prefect"] = c.prefect_port
        if c.mlflow_uri is None:
            wanted["MLflow"] = c.mlflow_port
        for what, port in wanted.items():
            with socket.socket() as s:
                try:
                    s.bind((c.host, port))
                except OSError:
                    flag = {"relay": "--relay-port", "Prefect": "--prefect-port", "MLflow": "--mlflow-port"}[
                        what
                    ]
                    raise StackError(
                        f"port {port} on {c.host} is in use; the {what} server needs it. Stop what "
                        f"holds it, or choose another with {flag}"
                    ) from None

    def start(self) -> None:
        c = self.config
        self._check_ports()
        (c.home / "logs").mkdir(parents=True, exist_ok=True)
        # Secrets, logs and the Prefect database live here: never let `git add -A` pick them up.
        (c.home / ".gitignore").write_text("*\n")
        github_secret = os.environ.get(GITHUB_SECRET_ENV) or _secret_file(
            c.home / "github-webhook-secret", lambda: secrets.token_hex(32)
        )
        mlflow_secret = _secret_file(c.home / "mlflow-webhook-secret", lambda: secrets.token_hex(32))
        prefect_api = c.prefect_api_url or f"http://{c.host}:{c.prefect_port}/api"
        mlflow_uri = c.mlflow_uri or f"http://{c.host}:{c.mlflow_port}"
        env = {
            **os.environ,
            "PREFECT_API_URL": prefect_api,
            "PREFECT_HOME": os.environ.get("PREFECT_HOME", str(c.home / "prefect")),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": str(c.worker_poll_s),
            "MLFLOW_TRACKING_URI": mlflow_uri,
            "LLMRELEASE_PROJECT_DIR": str(c.project),
        }
        for name in (GITHUB_SECRET_ENV, MLFLOW_SECRET_ENV):
            env.pop(name, None)  # only the relay gets the secrets
        self.urls = {"Prefect UI": prefect_api.removesuffix("/api"), "Prefect API": prefect_api}
        if c.prefect_api_url is None:
            self._spawn(
                "prefect-server",
                [str(_BIN / "prefect"), "server", "start", "--host", c.host, "--port", str(c.prefect_port)],
                env,
            )
        if c.mlflow_uri is None:
            self._start_mlflow(env)
        self.urls["MLflow UI"] = mlflow_uri
        self._wait_http("Prefect", f"{prefect_api}/health")
        self._wait_http("MLflow", f"{mlflow_uri}/health")
        for pool in POOLS:
            self._pool(pool, env)
        self._deploy(env)
        for pool in POOLS:
            self._spawn(f"worker-{pool}", [str(_BIN / "prefect"), "worker", "start", "--pool", pool], env)
        relay_env = {
            **env,
            GITHUB_SECRET_ENV: github_secret,
            MLFLOW_SECRET_ENV: mlflow_secret,
            "LLMRELEASE_RELAY_HOME": str(c.home / "relay"),
        }
        self._spawn(
            "relay",
            [str(_BIN / "llmrelease"), "relay", "--host", c.host, "--port", str(c.relay_port)],
            relay_env,
        )
        relay = f"http://{c.host}:{c.relay_port}"
        self._wait_http("relay", f"{relay}/healthz")
        hook_base = (c.public_relay_url or relay).rstrip("/")
        self._register_mlflow_webhook(mlflow_uri, f"{hook_base}/hooks/mlflow", mlflow_secret)
        self.urls.update(
            {
                "GitHub webhook": f"{hook_base}/hooks/github",
                "MLflow webhook": f"{hook_base}/hooks/mlflow (registered as '{WEBHOOK_NAME}')",
                "Relay health": f"{relay}/healthz",
            }
        )

    def _start_mlflow(self, env: dict[str, str]) -> None:
        c = self.config
        store = c.project / ".llmrelease"
        store.mkdir(parents=True, exist_ok=True)
        mlflow_env = {
            **env,
            # The relay runs on this machine: let MLflow deliver webhooks to it over plain HTTP.
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            # Webhook secrets are stored encrypted; a fixed key lets a restarted server read them.
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": _secret_file(c.home / "mlflow-webhook-key", _fernet_key),
            # Read by `mlflow server` from its environment: a database password stays off `ps`.
            "MLFLOW_BACKEND_STORE_URI": c.backend_store_uri or f"sqlite:///{store / 'mlflow.db'}",
            "MLFLOW_ARTIFACTS_DESTINATION": c.artifacts_destination or str(store / "artifacts"),
        }
        self._spawn(
            "mlflow-server",
            [str(_BIN / "mlflow"), "server", "--host", c.host, "--port", str(c.mlflow_port),
             "--workers", "1"],  # fmt: skip
            mlflow_env,
        )

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = self.config.home / "logs" / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                args,
                env=env,
                cwd=self.config.project,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole
            )
        self.children.append(_Child(name, proc, log))
        self.say(f"started {name} (pid {proc.pid}, log {log})")

    def _wait_http(self, what: str, url: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_children()
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise StackError(f"{what} did not answer at {url} within {timeout_s:.0f} s")

    def _run(self, what: str, args: list[str], env: dict[str, str], ok_if: str | None = None) -> None:
        done = subprocess.run(args, env=env, cwd=self.config.project, capture_output=True, text=True)
        if done.returncode != 0 and not (ok_if and ok_if in done.stdout + done.stderr):
            tail = (done.stdout + done.stderr)[-2000:]
            raise StackError(f"{what} failed (exit {done.returncode}):\n{tail}")

    def _pool(self, pool: str, env: dict[str, str]) -> None:
        self._run(
            f"creating work pool '{pool}'",
            [str(_BIN / "prefect"), "work-pool", "create", pool, "--type", "process"],
            env,
            ok_if="already exists",
        )

    def _deploy(self, env: dict[str, str]) -> None:
        path = self.config.prefect_file or _default_prefect_file(self.config.project)
        self.say(f"registering deployments from {path}")
        self._run(
            "prefect deploy",
            [str(_BIN / "prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", str(path)],
            env,
        )

    def _register_mlflow_webhook(self, mlflow_uri: str, url: str, secret: str) -> None:
        """One webhook named llmrelease-relay, created or updated (URL and secret) on each start."""
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
        existing = [w for w in client.list_webhooks(max_results=100) if w.name == WEBHOOK_NAME]
        if existing:
            client.update_webhook(
                existing[0].webhook_id, url=url, events=ALIAS_EVENTS, secret=secret, status="ACTIVE"
            )
        else:
            client.create_webhook(
                WEBHOOK_NAME,
                url,
                ALIAS_EVENTS,
                description="llmrelease: alias changes -> on-alias flow",
                secret=secret,
            )

    # ------------------------------------------------------------------------------------- run

    def check_children(self) -> None:
        for child in self.children:
            code = child.proc.poll()
            if code is not None:
                tail = child.log.read_text(errors="replace")[-1500:] if child.log.exists() else ""
                raise StackError(f"{child.name} exited with code {code}; see {child.log}\n{tail}")

    def wait(self) -> None:
        """Until Ctrl-C / SIGTERM, or until a child dies (then StackError)."""
        while True:
            self.check_children()
            time.sleep(1)

    def stop(self, grace_s: float = 10) -> None:
        """SIGTERM every process group (workers first, servers last), then SIGKILL stragglers."""
        for child in reversed(self.children):
            if child.proc.poll() is None:
                _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in reversed(self.children):
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} ignored SIGTERM for {grace_s:.0f} s: killing it")
        for child in self.children:
            _signal_group(child.proc, signal.SIGKILL)  # also reaps flow-run subprocesses left behind
            child.proc.wait()
        self.children.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(proc.pid, sig)


def _default_prefect_file(project: Path) -> Path:
    own = project / "prefect.yaml"
    if own.exists():
        return own
    import llmrelease

    shipped = Path(llmrelease.__file__).resolve().parent.parent / "prefect.yaml"
    if shipped.exists():
        return shipped
    raise InputError(
        f"no prefect.yaml in {project}",
        fix="copy prefect.yaml from the llmrelease repository into the project, or pass --prefect-file",
    )
