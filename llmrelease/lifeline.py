"""A lifeline: a watchdog process that ends, with this process, every process this process started.

A release starts long-lived children: Prefect's temporary API server, vLLM's engine core, OpenAI
servers (in their own session), git, multiprocessing helpers. When the release dies by SIGKILL none of
its own clean-up runs and those children live on for minutes. ``start_lifeline()`` starts, once per
process, a small Python process running this module's ``main`` in its own session (a Ctrl-C or a kill
of the parent's process group does not reach it). It watches the parent and remembers its descendants;
when the parent is gone (killed or exited normally) it sends SIGTERM to every descendant still alive,
waits ``--grace`` seconds, SIGKILLs the rest and exits. Nothing a release starts should outlive it.

Why several ways of finding descendants (orphans are reparented to init, so after the parent's death
its tree cannot be walked any more):

- a snapshot of the parent's tree every ``--interval`` seconds, kept as ``psutil.Process`` objects
  (pid + create time: a reused pid is never signalled);
- an environment marker ``LLMRELEASE_LIFELINE=<pid>:<token>`` exported before the lifeline starts:
  every exec'd descendant carries it in ``/proc/<pid>/environ``, so one started between two snapshots,
  or one that detached itself (double fork, setsid), is found at the end;
- forked-but-not-exec'd children do not show the marker (their environ is the parent's original one),
  so an at-fork hook in the watched process sends each forked child's pid over a datagram socket; the
  kernel keeps the datagrams for the lifeline even when the parent is killed an instant later.

Parent death is seen at once through a pidfd (Linux >= 5.3), else within ``--interval`` by
``os.getppid()`` changing (the lifeline is the parent's child: reparenting needs no pid comparison,
so pid reuse cannot fool it). Idle cost: one wake-up and a walk of the parent's tree per interval.

``LLMRELEASE_NO_LIFELINE=1`` disables it (embedding: the host manages its own processes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import selectors
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

__all__ = ["ENV_DISABLE", "ENV_MARKER", "start_lifeline", "main"]

ENV_MARKER = "LLMRELEASE_LIFELINE"
"""``<watched pid>:<random token>``, exported to everything the watched process starts afterwards."""
ENV_DISABLE = "LLMRELEASE_NO_LIFELINE"
"""Set to ``1`` (any value but empty or ``0``) to start no lifeline."""

INTERVAL_S = 0.5
"""Seconds between two snapshots of the parent's tree."""
GRACE_S = 3.0
"""Seconds between SIGTERM and SIGKILL for what the parent left behind."""
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)  # a dead lifeline must not SIGPIPE a forked child
# `python -m` would need this package on the child's default sys.path; the parent may have found it
# through a sys.path edited at run time. Appended, not prepended: nothing of the stdlib is shadowed.
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BOOT = "import sys; sys.path.append(sys.argv.pop(1)); from llmrelease.lifeline import main; sys.exit(main())"


@dataclass
class _Lifeline:
    owner: int
    """The pid that started it: a forked child inherits this state but is not watched by it."""
    proc: subprocess.Popen[bytes]
    reports: socket.socket
    """Our end of the fork-report socket; forked children inherit it and send their pid."""


_state: _Lifeline | None = None
_hook_registered = False
_lock = threading.Lock()


def start_lifeline() -> int | None:
    """Start this process's lifeline unless it runs already; its pid, or None when disabled.

    Exports ``LLMRELEASE_LIFELINE`` (inherited by every child started afterwards) and registers an
    at-fork hook. Call it before starting children: what is started earlier is found only by the first
    snapshot. A forked child of a watched process is itself unwatched until it calls this."""
    if os.environ.get(ENV_DISABLE, "") not in ("", "0") or os.name != "posix":
        return None
    with _lock:
        return _start()


def _start() -> int | None:
    global _state, _hook_registered
    if _state is not None and _state.owner == os.getpid() and _state.proc.poll() is None:
        return _state.proc.pid
    marker = f"{os.getpid()}:{secrets.token_hex(8)}"
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    os.environ[ENV_MARKER] = marker  # before the lifeline: it finds itself by it too, and skips itself
    try:
        with theirs:
            proc = subprocess.Popen(
                [
                    sys.executable, "-c", _BOOT, _HERE,
                    "--parent", str(os.getpid()),
                    "--marker", marker,
                    "--reports-fd", str(theirs.fileno()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                cwd="/",  # holds no directory of the parent's busy
                start_new_session=True,  # a terminal's Ctrl-C or a killpg of the parent spares it
            )  # fmt: skip
    except OSError:
        ours.close()
        return None
    if _state is not None and _state.owner == os.getpid():
        _state.reports.close()
    _state = _Lifeline(owner=os.getpid(), proc=proc, reports=ours)
    if not _hook_registered:
        os.register_at_fork(after_in_child=_report_fork)
        _hook_registered = True
    return proc.pid


def _report_fork() -> None:
    """In a freshly forked child: tell the lifeline our pid (never blocks, never raises)."""
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    if _state is not None:
        with contextlib.suppress(OSError):
            _state.reports.send(str(os.getpid()).encode(), _NOSIGNAL)


# ---------------------------------------------------------------------------------------------------
# The watcher (runs in the lifeline process; imports psutil only there).


def _has_children_files() -> bool:
    me = os.getpid()
    return os.path.exists(f"/proc/{me}/task/{me}/children")


class _Tree:
    """Descendants of a pid: /proc/<pid>/task/*/children where the kernel has it (cost grows with
    the tree, not with the machine), else psutil's scan of every process."""

    def __init__(self) -> None:
        self.fast = _has_children_files()

    def descendants(self, root: int) -> list[int]:
        if not self.fast:
            import psutil

            try:
                return [p.pid for p in psutil.Process(root).children(recursive=True)]
            except psutil.Error:
                return []
        out: list[int] = []
        todo = [root]
        while todo:
            pid = todo.pop()
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                        kids = [int(x) for x in f.read().split()]
                except OSError:
                    continue
                out.extend(kids)
                todo.extend(kids)
        return out


class _Watch:
    def __init__(self, parent: int, marker: str, reports: socket.socket | None) -> None:
        self.parent = parent
        self.marker = marker
        self.reports = reports
        self.me = os.getpid()
        self.tree = _Tree()
        self.known: dict[int, psutil.Process] = {}

    def parent_alive(self) -> bool:
        return os.getppid() == self.parent

    def remember(self, pid: int) -> None:
        import psutil

        if pid == self.me or pid == self.parent or pid in self.known:
            return
        with contextlib.suppress(psutil.Error):
            self.known[pid] = psutil.Process(pid)  # records the create time now: pid reuse is detected

    def drain_reports(self) -> None:
        if self.reports is None:
            return
        while True:
            try:
                data = self.reports.recv(64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            with contextlib.suppress(ValueError):
                self.remember(int(data))

    def snapshot(self) -> None:
        seen = set(self.tree.descendants(self.parent))
        for pid in seen:
            self.remember(pid)
        # Remembered but no longer in the tree: dead (forget it) or escaped (keep it, it is ours).
        for pid in [p for p in self.known if p not in seen]:
            if not _alive(self.known[pid]):
                del self.known[pid]

    def run(self, interval: float, grace: float) -> None:
        pidfd = _pidfd(self.parent)
        if pidfd is not None and not self.parent_alive():  # the pid may name another process by now
            os.close(pidfd)
            pidfd = None
        sel = selectors.DefaultSelector()  # not select.select: the inherited fd may be >= 1024
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ, "parent")
        if self.reports is not None:
            sel.register(self.reports, selectors.EVENT_READ, "reports")
        while self.parent_alive():
            with contextlib.suppress(Exception):  # a watchdog dead of a bug protects nothing
                self.snapshot()
            events = sel.select(interval) if sel.get_map() else _sleep(interval)
            for key, _ in events:
                if key.data == "parent":  # stays readable once the parent is gone: stop watching it
                    sel.unregister(key.fileobj)
                else:
                    self.drain_reports()
        self.drain_reports()
        self.end(grace)

    def victims(self) -> dict[int, psutil.Process]:
        """Everything still alive that the parent started: remembered, their descendants, and every
        process carrying our marker."""
        import psutil

        out = {pid: p for pid, p in self.known.items() if _alive(p)}
        for p in psutil.process_iter():
            if p.pid in out or p.pid == self.me:
                continue
            with contextlib.suppress(psutil.Error):
                if p.environ().get(ENV_MARKER) == self.marker:
                    out[p.pid] = p
        for root in list(out):
            for pid in self.tree.descendants(root):
                if pid not in out and pid != self.me:
                    with contextlib.suppress(psutil.Error):
                        out[pid] = psutil.Process(pid)
        out.pop(self.me, None)
        out.pop(self.parent, None)  # normal exit: a zombie waiting for its own parent; never ours
        return out

    def end(self, grace: float) -> None:
        victims = self.victims()
        _signal_all(victims.values(), term=True)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in victims.values()):
            time.sleep(0.1)
        self.drain_reports()  # children forked during the shutdown
        self.known.update(victims)
        late = self.victims()  # anything started while shutting down, and the survivors
        _signal_all(late.values(), term=False)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(_alive(p) for p in late.values()):
            time.sleep(0.05)


def _signal_all(procs, *, term: bool) -> None:
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.Error):  # gone, reused pid (psutil checks), or not ours to kill
            if term:
                p.terminate()
            else:
                p.kill()


def _alive(p: psutil.Process) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _sleep(seconds: float) -> list:
    time.sleep(seconds)
    return []


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: polling os.getppid() still sees the death
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmrelease.lifeline", description=__doc__)
    parser.add_argument("--parent", type=int, required=True, help="pid to watch (our parent process)")
    parser.add_argument("--marker", required=True, help=f"value of {ENV_MARKER} in its environment")
    parser.add_argument("--reports-fd", type=int, default=None, help="datagram socket of fork reports")
    parser.add_argument("--interval", type=float, default=INTERVAL_S, help="seconds between snapshots")
    parser.add_argument("--grace", type=float, default=GRACE_S, help="seconds from SIGTERM to SIGKILL")
    args = parser.parse_args(argv)
    reports = None
    if args.reports_fd is not None:
        reports = socket.socket(fileno=args.reports_fd)
        reports.setblocking(False)
    _Watch(args.parent, args.marker, reports).run(args.interval, args.grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
