"""Diagnostic for benchmark 3: peak RSS per release step, to see where memory grows with rows.

A thread samples this process's RSS every 20 ms while two releases run (zero-cost engine, Prefect
in-process, MLflow on SQLite) and attributes each sample to the step running then (nested steps
are attributed to the innermost). Not a ratio benchmark: run it when memory_growth.py misses its target.

    .venv/bin/python bench/memory_stages.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
stage = ["imports"]
release = ["imports"]
peaks: dict[str, float] = {}


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def _sample() -> None:
    while True:
        rss, now = _rss_mb(), stage[0]
        peaks[now] = max(peaks.get(now, 0.0), rss)
        time.sleep(0.02)


def _mark(owner: Any, name: str, label: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        stage[0] = f"{release[0]}: {label}"
        try:
            return original(*args, **kwargs)
        finally:
            stage[0] = f"{release[0]}: after {label}"

    setattr(owner, name, wrapped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from _project import APP, make_champion, make_project

    from llmrelease.runtime import configure

    configure()
    os.environ["LLMRELEASE_ENGINE_FACTORY"] = "llmrelease.engines.instant:instant_engine"
    import llmrelease.tasks.prefect_tasks as pt
    from llmrelease.flows.release import release_flow

    for name in ("build_plan", "evaluate"):
        _mark(pt, name, name)
    for name in ("register_candidate", "log_evaluation", "promote"):
        _mark(pt, name, name)
    for name in ("champion_item_scores", "gate"):
        _mark(pt.steps, name, name)
    threading.Thread(target=_sample, daemon=True).start()

    project = make_project(Path(tempfile.mkdtemp(prefix="llmrelease-mem-")) / "p", args.rows)
    alt = project / "alt.prompt.yaml"
    alt.write_text(
        (project / "registry" / APP / "prompt.yaml").read_text().replace("{{ ticket }}", "T: {{ ticket }}")
    )
    release[0] = stage[0] = "release 1"
    make_champion(project, release_flow(app=APP, project_dir=str(project)))  # a test engine never promotes
    release[0] = stage[0] = "release 2"
    release_flow(app=APP, project_dir=str(project), prompt_file=str(alt))
    time.sleep(0.1)
    print(f"rows={args.rows} peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    for label, mb in peaks.items():  # in the order the steps ran
        print(f"{mb:8.0f} MB  {label}")


if __name__ == "__main__":
    main()
