"""Named points between the registry writes of a release, where the fault-injection tests stop it.

Each point is a no-op unless the environment names it (one dict lookup):

- ``LLMRELEASE_FAULT_KILL_AT=<point>``: the process sends itself SIGKILL there: no exception, no
  ``finally``, no atexit; what a crash, an OOM kill or a pulled plug leaves behind.
- ``LLMRELEASE_FAULT_PAUSE_AT=<point>[,<point>...]`` with ``LLMRELEASE_FAULT_DIR=<dir>``: at each
  named point the process creates ``<dir>/<point>.reached`` and waits (at most 120 s) until
  ``<dir>/<point>.go`` exists, holding a window open so a test can make another release act in it.
- ``LLMRELEASE_FAULT_NOTE_AT=<point>[,...]`` (same directory): only creates ``<point>.reached``.

The points are listed in :data:`POINTS`, in the order a promoting release passes them.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

__all__ = ["POINTS", "checkpoint"]

POINTS = (
    "register.waiting_for_lock",
    "register.locked",
    "register.prompt_registered",
    "register.model_registered",
    "log.run_started",
    "log.artifacts_written",
    "log.finished",
    "log.challenger_moved",
    "promote.gates_passed",
    "promote.waiting_for_lock",
    "promote.locked",
    "promote.intent_written",
    "promote.previous_model_moved",
    "promote.previous_prompt_moved",
    "promote.champion_model_moved",
    "promote.champion_prompt_moved",
    "promote.challenger_cleared",
    "promote.tagged",
    "promote.done",
)


def checkpoint(point: str) -> None:
    """Stop here if a fault-injection test asked to (see the module docstring)."""
    if os.environ.get("LLMRELEASE_FAULT_KILL_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
    pause = point in os.environ.get("LLMRELEASE_FAULT_PAUSE_AT", "").split(",")
    if pause or point in os.environ.get("LLMRELEASE_FAULT_NOTE_AT", "").split(","):
        where = Path(os.environ["LLMRELEASE_FAULT_DIR"])
        (where / f"{point}.reached").touch()
        deadline = time.monotonic() + 120
        while pause and not (where / f"{point}.go").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
