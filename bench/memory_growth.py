"""Benchmark 3: peak memory of a release as the evalset grows (1k, 10k, 100k rows).

Each size runs in its own process (so peaks do not mix): a first release and a second candidate
compared with it, with the zero-cost engine, Prefect in-process and MLflow on SQLite. Reports the
peak RSS of that process. Target: flat within 10%.

    .venv/bin/python bench/memory_growth.py [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(rows: int) -> None:
    sys.path.insert(0, str(HERE))
    from _project import APP, make_champion, make_project

    from llmrelease.runtime import configure

    configure()
    os.environ["LLMRELEASE_ENGINE_FACTORY"] = "llmrelease.engines.instant:instant_engine"
    from llmrelease.flows.release import release_flow

    tmp = Path(tempfile.mkdtemp(prefix="llmrelease-mem-"))
    project = make_project(tmp / "p", rows)
    alt = project / "alt.prompt.yaml"
    alt.write_text(
        (project / "registry" / APP / "prompt.yaml").read_text().replace("{{ ticket }}", "T: {{ ticket }}")
    )
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    make_champion(project, release_flow(app=APP, project_dir=str(project)))  # a test engine never promotes
    release_flow(app=APP, project_dir=str(project), prompt_file=str(alt))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": rows, "peak_mb": peak / 1024, "after_imports_mb": base_rss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n)], capture_output=True, text=True, check=True
        ).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{'rows':>8} {'peak RSS (MB)':>14} {'after imports (MB)':>19} {'vs smallest':>12}")
    first = results[0]["peak_mb"]
    for r in results:
        ratio = r["peak_mb"] / first
        print(f"{r['rows']:>8} {r['peak_mb']:>14.0f} {r['after_imports_mb']:>19.0f} {ratio:>12.2f}")


if __name__ == "__main__":
    main()
