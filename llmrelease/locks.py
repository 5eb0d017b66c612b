"""The per-app lock that serialises registration and promotion, from what already exists.

MLflow has no transaction over aliases and tags, so every check-then-write on an app's registry
state (find-or-create a version, compare-and-set the champion, roll back) runs while holding one
lock per app and store:

- **the store is a SQLite file** (the embedded default): an OS lock (``flock``) on a file beside
  it. Everyone who can write that store shares the file system, and the kernel releases the lock
  when its holder dies, ``kill -9`` included.
- **a Prefect server is configured** (``PREFECT_API_URL``) and the store is remote: a Prefect global
  concurrency limit ``llmrelease-registry-<app>`` of one slot, which holds across workers and machines.
  Its slot is leased; a holder that dies gives it back when the lease ends (60 s, Prefect's
  minimum), so a crash costs the next release at most that wait.
- **otherwise** (a remote store, Prefect's temporary server): an OS lock under llmrelease's cache
  directory, keyed by the store. It serialises releases on this machine only; run a Prefect server
  when releases of one app can start on several machines.

``LLMRELEASE_REGISTRY_LOCK=file|prefect`` forces a kind (tests, unusual set-ups).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from llmrelease.errors import InfrastructureError

__all__ = ["LockPlace", "app_lock", "lock_place", "sqlite_path", "store_init_lock"]

LEASE_SECONDS = 60.0
"""A Prefect slot's lease: renewed while held, given back this long after its holder died."""


@dataclass(frozen=True)
class LockPlace:
    kind: str
    """``file`` or ``prefect``."""
    where: str
    """The lock file, or the Prefect global concurrency limit's name."""


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI; None for any other store."""
    parts = urlsplit(tracking_uri)
    if parts.scheme != "sqlite":
        return None
    return Path(unquote(parts.path)).resolve() if parts.path else None


def _safe(app: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in app)


def lock_place(tracking_uri: str, app: str) -> LockPlace:
    forced = os.environ.get("LLMRELEASE_REGISTRY_LOCK", "").strip().lower()
    db = sqlite_path(tracking_uri)
    if forced == "prefect" or (not forced and db is None and os.environ.get("PREFECT_API_URL")):
        return LockPlace("prefect", f"llmrelease-registry-{_safe(app)}")
    if db is not None:
        return LockPlace("file", str(db.parent / f"{db.name}.locks" / f"{_safe(app)}.lock"))
    from llmrelease.engines.model_source import cache_dir

    store = hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]
    return LockPlace("file", str(cache_dir() / "locks" / f"{store}-{_safe(app)}.lock"))


@contextmanager
def app_lock(tracking_uri: str, app: str, *, timeout: float = 900.0) -> Iterator[LockPlace]:
    """Hold ``app``'s registry lock for the block; InfrastructureError after ``timeout`` seconds."""
    place = lock_place(tracking_uri, app)
    if place.kind == "prefect":
        with _prefect_slot(place.where, timeout):
            yield place
    else:
        with _file_lock(Path(place.where), timeout):
            yield place


@contextmanager
def _file_lock(path: Path, timeout: float) -> Iterator[None]:
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh, non-reentrant lock object each time: two releases in one process (threads) exclude
    # each other exactly as two processes do.
    lock = FileLock(str(path), thread_local=False, is_singleton=False)
    try:
        lock.acquire(timeout=timeout, poll_interval=0.05)
    except Timeout:
        raise InfrastructureError(
            f"the registry lock {path} was held for more than {timeout:.0f} s by another release"
        ) from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def _prefect_slot(name: str, timeout: float) -> Iterator[None]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another release created it first
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    start = time.monotonic()
    try:
        with concurrency(name, occupy=1, timeout_seconds=timeout, lease_duration=LEASE_SECONDS, strict=True):
            yield
    except TimeoutError:
        if time.monotonic() - start < timeout:
            raise
        raise InfrastructureError(
            f"the Prefect concurrency limit {name} was held for more than {timeout:.0f} s by another release"
        ) from None


@contextmanager
def store_init_lock(tracking_uri: str, *, timeout: float = 300.0) -> Iterator[None]:
    """Held while a process opens (and maybe creates) a SQLite store; a no-op for other stores,
    whose server creates its schema once."""
    db = sqlite_path(tracking_uri)
    if db is None:
        yield
        return
    with _file_lock(db.parent / f"{db.name}.locks" / "_open.lock", timeout):
        yield
