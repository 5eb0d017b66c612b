"""A release's registry writes as a process of their own, so a test can SIGKILL it between two of
them (``llmrelease.faults``) or hold a window open while another one acts.

It stands in for a release whose gates passed: the plan, the registration (lock, recovery,
find-or-create), the run, the verdict, ``challenger`` and the promotion (lock, compare-and-set,
intent, alias moves) are llmrelease's own code, called in the flow's order; only the evaluation and
the gates are skipped, so one case costs a process start instead of an engine run.

    python tests/fault_worker.py PROJECT TRACKING_URI   # exit 0 promoted or already champion,
                                                        # 3 champion moved (conflict)
    python tests/fault_worker.py PROJECT TRACKING_URI --race ROLE ROUNDS DIR

``--race``: ROUNDS releases in a row, each of its own prompt variant (``ROLE``-round), with its
checkpoint files under DIR/<round>/ROLE/ and its exit code written to DIR/<round>/ROLE.exit; two such
processes race each other round by round, paced by the test through the checkpoint files.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

APP = "support-triage"


def release_once(project: Path, tracking_uri: str, app: str = APP, prompt_file: Path | None = None) -> int:
    from llmrelease.errors import PromotionConflict
    from llmrelease.faults import checkpoint
    from llmrelease.mlflow_registry import TAG, MlflowRegistry
    from llmrelease.plan import build_plan
    from llmrelease.runtime import preserved_environ
    from llmrelease.tasks.promotion.candidate import register_candidate
    from llmrelease.tasks.promotion.record import record_verdict
    from llmrelease.tasks.promotion.transaction import promote_version

    # Planned with the zero-cost engine (no tokenizer, no model), registered as a vLLM candidate.
    # The tests also call this in their own process: the environment is left as it was.
    with preserved_environ("LLMRELEASE_ENGINE_FACTORY"):
        os.environ["LLMRELEASE_ENGINE_FACTORY"] = "llmrelease.engines.instant:instant_engine"
        plan = build_plan(project, app, prompt_file=prompt_file, with_traffic=False)
    plan = dataclasses.replace(plan, engine_factory="vllm")
    from llmrelease.locks import sqlite_path

    db = sqlite_path(tracking_uri)  # artifacts beside the store, as resolve_store puts them
    registry = MlflowRegistry(tracking_uri, artifact_root=(db.parent / "artifacts").as_uri() if db else None)
    candidate = register_candidate(registry, plan)
    if candidate.is_champion:
        return 0
    run_id = registry.log_evaluation(
        app,
        run_name=f"{app}-v{candidate.version.version}",
        params={"model_version": candidate.version.version},
        metrics={"tickets.category_accuracy": 1.0},
        tags={TAG + "model_version": candidate.version.version},
        tables={},
        artifacts={"gate_report.json": {"passed": True}},
        datasets=[],
        final_tags={TAG + "verdict": "passed"},
    )
    record_verdict(registry, candidate, run_id, "passed")
    checkpoint("promote.gates_passed")
    try:
        promote_version(
            registry,
            app,
            candidate.version,
            expected_champion=candidate.champion.version if candidate.champion else None,
            run_id=run_id,
        )
    except PromotionConflict as exc:
        print(exc, file=sys.stderr)
        return 3
    return 0


def prompt_variant(project: Path, dest: Path, tag: str, app: str = APP) -> Path:
    """The app's prompt spec with one message changed by ``tag``: another candidate."""
    text = (project / "registry" / app / "prompt.yaml").read_text()
    needle = "Can I get a PDF invoice for last month?"
    assert needle in text
    dest.write_text(text.replace(needle, f"{needle} ({tag})"))
    return dest


def race(project: Path, tracking_uri: str, role: str, rounds: int, where: Path) -> None:
    for k in range(rounds):
        here = where / str(k) / role
        here.mkdir(parents=True, exist_ok=True)
        os.environ["LLMRELEASE_FAULT_DIR"] = str(here)
        prompt = prompt_variant(project, where / f"prompt-{role}.yaml", f"{role}-{k}")
        code = release_once(project, tracking_uri, prompt_file=prompt)
        done = where / str(k) / f"{role}.exit"
        done.with_suffix(".tmp").write_text(str(code))
        done.with_suffix(".tmp").rename(done)  # atomic: the test never reads it half-written


if __name__ == "__main__":
    from llmrelease.runtime import configure

    configure(verbose=False)
    if len(sys.argv) > 3 and sys.argv[3] == "--race":
        race(Path(sys.argv[1]), sys.argv[2], sys.argv[4], int(sys.argv[5]), Path(sys.argv[6]))
        sys.exit(0)
    sys.exit(release_once(Path(sys.argv[1]), sys.argv[2]))
