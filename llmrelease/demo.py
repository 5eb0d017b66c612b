"""The bundled demo: three releases of support-triage on a fresh local store.

1. the baseline prompt becomes the first champion (absolute gates only);
2. the app's current prompt (few-shot) beats it and is promoted;
3. a deliberately worse prompt is rejected by the gates and the champion stays;

then the demo log's user feedback (written for the demo) is harvested against the versions those
releases registered: a regression evalset, an SFT set and a preference set; and finally the app's
router (zero-shot, escalating to few-shot when unsure) is released: on this model it does not beat a
random router at equal cost, and its gates say so.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rich.rule import Rule
from rich.table import Table

from llmrelease.errors import InputError
from llmrelease.report import console as report_console
from llmrelease.report import outcome_panel

__all__ = ["run_demo", "DEMO_APP", "demo_project"]

DEMO_APP = "support-triage"
DEMO_LOG = "examples/support-triage/traffic.jsonl"
"""The demo's production log: 51 requests, 34 with user feedback (written for the demo)."""
STEPS = [
    ("first release: baseline prompt", "examples/support-triage/baseline.prompt.yaml", "promoted"),
    ("better candidate: few-shot prompt", None, "promoted"),
    ("worse candidate: definitions prompt", "examples/support-triage/regressed.prompt.yaml", "rejected"),
]


def demo_project(project: Path | None) -> Path:
    candidates = [project] if project else [Path.cwd(), Path(__file__).resolve().parent.parent]
    for c in candidates:
        if c is not None and (c / "registry" / DEMO_APP / "prompt.yaml").is_file():
            return c.resolve()
    raise InputError(
        f"demo app '{DEMO_APP}' not found in {', '.join(str(c) for c in candidates if c)}",
        fix="run from the llmrelease checkout, or pass --project PATH_TO_CHECKOUT",
    )


def run_demo(project: Path | None = None) -> int:
    from llmrelease import api

    console = report_console()
    root = demo_project(project)
    store_dir = root / ".llmrelease" / "demo"
    shutil.rmtree(store_dir, ignore_errors=True)  # the demo always starts from an empty store
    summary = Table(title="Demo summary", header_style="bold")
    for col in ("step", "candidate", "category accuracy", "outcome", "expected", "seconds"):
        summary.add_column(col)
    ok = True
    ui = ""
    for title, prompt, expected in STEPS:
        console.print(Rule(f"[bold]{title}"))
        t0 = time.perf_counter()
        outcome = api.release(DEMO_APP, root, prompt=(root / prompt) if prompt else None, store_dir=store_dir)
        ui = outcome.mlflow_ui or ""
        seconds = time.perf_counter() - t0
        console.print(outcome_panel(outcome.to_dict()))
        acc = outcome.metrics.get("tickets.category_accuracy")
        summary.add_row(
            title,
            f"v{outcome.candidate_version}",
            f"{acc:.3f}" if acc is not None else "-",
            outcome.status,
            expected,
            f"{seconds:.0f}",
        )
        ok &= outcome.status == expected
    console.print(Rule("[bold]from production back: the demo log's user feedback"))
    from llmrelease.report import harvest_report

    harvested = api.harvest(DEMO_APP, root, traffic=DEMO_LOG, out=store_dir / "harvests", store_dir=store_dir)
    harvest_report(harvested, console)
    console.print(
        Rule("[bold]routing: the zero-shot prompt when it is enough (registry/support-triage/router.yaml)")
    )
    from llmrelease.report import router_report

    t0 = time.perf_counter()
    routed = api.route(DEMO_APP, root, store_dir=store_dir)
    router_report(routed, console)
    quality = (routed.get("estimates") or {}).get("router.quality")
    summary.add_row(
        "router: zero-shot, escalating to few-shot",
        f"router v{routed['version']}",
        f"{quality:.3f}" if quality is not None else "-",
        routed["status"],
        "not promoted",
        f"{time.perf_counter() - t0:.0f}",
    )
    ok &= routed["status"] in ("rejected", "inconclusive")
    console.print(Rule())
    console.print(summary)
    console.print(f"MLflow store: {store_dir}")
    console.print(f"Open the MLflow UI:\n  [bold]{ui}[/]")
    console.print(
        f"Or check from the command line:  llmrelease status {DEMO_APP} --tracking-uri "
        f"sqlite:///{store_dir / 'mlflow.db'}"
    )
    if not ok:
        console.print("[bold red]the demo did not go as expected (see the outcomes above)[/]")
    return 0 if ok else 1
