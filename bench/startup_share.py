"""Benchmark 4: how much of the demo's wall time is engine start-up (and GGUF conversion).

Runs the demo's three releases in this process on a fresh store and reports, for each, the wall
time, the engine start-up and the model-resolution time (the one-off GGUF conversion when the cache
is cold), and the start-up share of the whole demo.

    .venv/bin/python bench/startup_share.py [--cold]     # --cold: empty model cache first
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="use an empty model cache (pay the conversion)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmrelease-startup-"))
    if args.cold:
        os.environ["LLMRELEASE_CACHE"] = str(tmp / "cache")

    from llmrelease.runtime import configure

    configure()
    from llmrelease.demo import STEPS
    from llmrelease.flows.release import release_flow

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    total_t0 = time.perf_counter()
    rows = []
    for title, prompt, _ in STEPS:
        t0 = time.perf_counter()
        out = release_flow(
            app="support-triage", project_dir=str(REPO), prompt_file=str(REPO / prompt) if prompt else None
        )
        m = out["metrics"]
        rows.append(
            (
                title,
                time.perf_counter() - t0,
                m["engine.startup_s"],
                m["engine.model_resolve_s"],
                m["serving.wall_s"],
            )
        )
    total = time.perf_counter() - total_t0
    header = ("release", "wall (s)", "engine start (s)", "model resolve (s)", "generate (s)")
    print(f"{header[0]:<40} {header[1]:>9} {header[2]:>17} {header[3]:>18} {header[4]:>13}")
    for title, wall, start, resolve, gen in rows:
        print(f"{title:<40} {wall:>9.1f} {start:>17.1f} {resolve:>18.1f} {gen:>13.1f}")
    startup = sum(r[2] + r[3] for r in rows)
    print(
        f"\ndemo wall {total:.1f}s; engine start-up + model resolution {startup:.1f}s = {startup / total:.0%}"
    )


if __name__ == "__main__":
    main()
