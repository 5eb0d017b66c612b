"""Benchmark 2: everything except generation, at 100 / 1,000 / 10,000 items.

The release flow runs for real (Prefect in-process, MLflow on SQLite, evaluate metrics, gates,
promotion) with the zero-cost engine (``llmrelease.engines.instant``), so the time measured is the
pipeline's own. Each size does two releases: the first (no champion) and a second candidate
compared with it (paired bootstrap on every item). Target: at most 2 s + 1 ms per item, growing
linearly.

    .venv/bin/python bench/orchestration_overhead.py [--sizes 100,1000,10000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _project import APP, make_champion, make_project  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from llmrelease.runtime import configure

    configure()
    os.environ["LLMRELEASE_ENGINE_FACTORY"] = "llmrelease.engines.instant:instant_engine"
    from llmrelease.flows.release import release_flow

    tmp = Path(tempfile.mkdtemp(prefix="llmrelease-bench-"))
    # Warm-up: Prefect's in-process server and the first imports are paid once, not per size.
    warm = make_project(tmp / "warm", 10)
    release_flow(app=APP, project_dir=str(warm))

    rows = []
    for n in sizes:
        project = make_project(tmp / f"n{n}", n)
        alt = project / "alt.prompt.yaml"
        alt.write_text(
            (project / "registry" / APP / "prompt.yaml").read_text().replace("fewshot-8-v1", "bench-v2")
        )
        alt.write_text(alt.read_text().replace("{{ ticket }}", "Ticket: {{ ticket }}"))
        t0 = time.perf_counter()
        first = release_flow(app=APP, project_dir=str(project))
        t1 = time.perf_counter()
        # A test engine never moves an alias: the first version is made champion by hand (not
        # timed), so the second release is compared against it as a real one would be.
        assert first["status"] == "test_engine" and first["report"]["passed"], first["status"]
        make_champion(project, first)
        t1b = time.perf_counter()
        second = release_flow(app=APP, project_dir=str(project), prompt_file=str(alt))
        t2 = time.perf_counter()
        assert second["report"]["gates"][-1]["n"] == n
        budget = 2 + 0.001 * n
        rows.append((n, t1 - t0, t2 - t1b, budget))

    print(f"{'items':>8} {'first (s)':>10} {'vs champion (s)':>16} {'target (s)':>11} {'ratio':>7}")
    for n, a, b, budget in rows:
        print(f"{n:>8} {a:>10.2f} {b:>16.2f} {budget:>11.2f} {max(a, b) / budget:>7.2f}")
    n0, _, b0, _ = rows[0]
    for n, _, b, _ in rows[1:]:
        growth = (b - b0) / (n - n0) * 1000
        print(f"marginal cost {n0}->{n}: {growth:.3f} ms per item (second release)")


if __name__ == "__main__":
    main()
