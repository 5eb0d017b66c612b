"""Process environment for embedded runs: offline, quiet, no telemetry. Set before heavy imports."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["configure", "preserved_environ"]


@contextmanager
def preserved_environ(*keys: str) -> Iterator[None]:
    """Whatever happens to these environment variables inside the block is undone after it."""
    saved = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def configure(*, verbose: bool = False) -> None:
    """Defaults only (``setdefault``): anything the user exported wins."""
    env = {
        # Nothing downloads at run time: models come from packages, metrics from this repo.
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        # Prefect's in-process server: no telemetry heartbeat (it also fights the SQLite lock).
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Its first start migrates a fresh database; Prefect's 20 s default timed out on a busy
        # 2-core box and failed the release as infrastructure.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "VLLM_LOGGING_LEVEL": "INFO" if verbose else "ERROR",
        "MLFLOW_LOGGING_LEVEL": "INFO" if verbose else "WARNING",
        "PREFECT_LOGGING_LEVEL": "INFO" if verbose else "WARNING",
    }
    for k, v in env.items():
        os.environ.setdefault(k, v)
    if not verbose:
        warnings.filterwarnings("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("PYTHONWARNINGS", "ignore")  # engine subprocesses inherit this
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        for name in ("mlflow", "alembic", "httpx", "datasets", "evaluate", "transformers"):
            logging.getLogger(name).setLevel(logging.ERROR)


def process_owner() -> str:
    """``host|pid|start-time`` of this process: written on runs and intents so a later release can
    tell a crashed owner (same host, no such process) from a live one."""
    import socket

    import psutil

    me = psutil.Process()
    return f"{socket.gethostname()}|{me.pid}|{me.create_time():.2f}"


def owner_alive(owner: str) -> bool | None:
    """Whether the process a :func:`process_owner` token names still runs; None when it ran on
    another host (unknowable from here) or the token is not one."""
    import socket

    import psutil

    try:
        host, pid, started = owner.split("|")
        pid_n, started_t = int(pid), float(started)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        proc = psutil.Process(pid_n)
        return abs(proc.create_time() - started_t) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class _NoEngineErrors:
    """Drops Prefect's ERROR records (a failed task's traceback) from the console only."""

    @staticmethod
    def filter(record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR or not record.name.startswith("prefect")


def console_without_prefect_errors() -> None:
    """On a failure Prefect prints the task's traceback on the console, and the CLI then prints the
    cause in one line: keep only the line (``--verbose`` shows both). Prefect's API log handler,
    what the Prefect UI shows, keeps every record."""
    import prefect.main  # noqa: F401  (sets up Prefect's logging)
    from prefect.logging.handlers import PrefectConsoleHandler

    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler) and _NoEngineErrors not in handler.filters:
                handler.addFilter(_NoEngineErrors)
