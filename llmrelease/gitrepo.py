"""Git, read-only on the user's checkout: which files a push changed, and the project at a commit.

A release for a pushed commit must evaluate exactly that commit, not whatever the worker's checkout
holds; it runs in a detached ``git worktree`` and leaves the checkout (and its branch) untouched.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmrelease.errors import InputError

__all__ = ["is_repo", "has_commit", "fetch", "changed_paths", "at_commit", "is_sha", "subdir", "ZERO_SHA"]

ZERO_SHA = "0" * 40


def _git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=check)


def is_sha(value: str | None) -> bool:
    return bool(value) and 7 <= len(value) <= 40 and all(c in "0123456789abcdef" for c in value.lower())


def is_repo(root: Path) -> bool:
    try:
        return _git(root, "rev-parse", "--is-inside-work-tree", check=False).stdout.strip() == "true"
    except OSError:  # no git binary
        return False


def has_commit(root: Path, sha: str) -> bool:
    return _git(root, "cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode == 0


def fetch(root: Path) -> None:
    """Best effort: a worker's clone may be behind the push that woke it."""
    _git(root, "fetch", "--quiet", "--all", check=False)


def head(root: Path) -> str:
    return _git(root, "rev-parse", "HEAD").stdout.strip()


def _toplevel(root: Path) -> Path:
    return Path(_git(root, "rev-parse", "--show-toplevel").stdout.strip()).resolve()


def _relative(root: Path, top: Path) -> str:
    rel = root.resolve().relative_to(top).as_posix()
    return "" if rel == "." else rel


def subdir(root: Path) -> str:
    """Where ``root`` sits inside its repository ("" at the top), as Git paths are written."""
    return _relative(root, _toplevel(root))


def changed_paths(root: Path, before: str, after: str) -> list[str] | None:
    """Files that differ between two commits, or None when Git cannot say (unknown ``before``)."""
    if before == ZERO_SHA or not has_commit(root, before) or not has_commit(root, after):
        return None
    out = _git(root, "diff", "--name-only", "--no-renames", before, after).stdout
    return sorted(p for p in out.splitlines() if p)


@contextmanager
def at_commit(root: Path, commit: str | None) -> Iterator[Path]:
    """The project directory as of ``commit``.

    ``root`` itself when no commit is asked for, when it is not a Git checkout, or when HEAD already
    is that commit (with local edits, as the CLI does); else a temporary detached worktree, removed
    afterwards. A commit the checkout does not have (after a fetch) is an input error."""
    if not commit or not is_sha(commit.removesuffix("+dirty")) or not is_repo(root):
        yield root
        return
    commit = commit.removesuffix("+dirty")
    if head(root).startswith(commit):
        yield root
        return
    if not has_commit(root, commit):
        fetch(root)
    if not has_commit(root, commit):
        raise InputError(
            f"commit {commit} is not in the project checkout {root}",
            fix="push it to the remote the checkout fetches from, or point the worker's "
            "LLMRELEASE_PROJECT_DIR at a clone that has it",
        )
    top = _toplevel(root)
    tmp = Path(tempfile.mkdtemp(prefix=f"llmrelease-{commit[:12]}-"))
    tree = tmp / "tree"
    _git(top, "worktree", "add", "--detach", "--quiet", str(tree), commit)
    try:
        yield tree / _relative(root, top)
    finally:
        _git(top, "worktree", "remove", "--force", str(tree), check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        _git(top, "worktree", "prune", check=False)
