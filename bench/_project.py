"""Synthetic projects for benchmarks: the demo app's specs with an evalset of N generated tickets."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APP = "support-triage"
CATEGORIES = ["billing", "technical", "account", "shipping"]
URGENCY = ["low", "medium", "high"]


GUARD_GATES = ("redteam-unsafe-responses", "unsafe-responses-vs-champion", "redteam-schema-conforms")


def drop_guard(project: Path, app: str = APP) -> None:
    """Remove the demo's guard, its red-team evalset and the gates on them: benchmarks of everything
    but the guard (and tests about something else) should not pay for stand-in classification."""
    app_dir = project / "registry" / app
    (app_dir / "guard.yaml").unlink(missing_ok=True)
    for name in ("redteam.jsonl", "redteam.card.yaml"):
        (project / "evalsets" / app / name).unlink(missing_ok=True)
    _drop_gates(app_dir / "gates.yaml", GUARD_GATES)


def _drop_gates(path: Path, names: tuple[str, ...]) -> None:
    """Rewrite a gate policy without the named gates. Read with llmrelease's own YAML loader
    (YAML 1.2 booleans: a gate's ``on:`` key stays a string)."""
    import yaml

    from llmrelease.specfile import parse_yaml

    policy = parse_yaml(path.read_text(), path)[1]
    policy["gates"] = [g for g in policy["gates"] if g["name"] not in names]
    path.write_text(yaml.safe_dump(policy, sort_keys=False))


SHADOW_GATES = ("shadow-no-errors", "shadow-ttft-p95", "shadow-cost")


def drop_shadow(project: Path, app: str = APP) -> None:
    """Remove the demo's shadow spec and its gates (no OpenAI server is started)."""
    app_dir = project / "registry" / app
    (app_dir / "shadow.yaml").unlink(missing_ok=True)
    _drop_gates(app_dir / "gates.yaml", SHADOW_GATES)


def make_champion(project: Path, outcome: dict, app: str = APP) -> None:
    """Make a test-engine release's version champion by hand: a test engine never moves an alias,
    and benchmarks need a champion for the second release to be compared against."""
    from llmrelease.mlflow_registry import MlflowRegistry
    from llmrelease.tasks.promotion.transaction import promote_version

    registry = MlflowRegistry(f"sqlite:///{project / '.llmrelease' / 'mlflow.db'}")
    [version] = [v for v in registry.versions(app) if v.version == outcome["candidate_version"]]
    promote_version(registry, app, version, expected_champion=None, run_id=outcome["run_id"])


def make_project(dest: Path, rows: int, *, seed: int = 0) -> Path:
    """A project directory with registry/ copied from the repo and ``rows`` synthetic tickets."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(REPO / "registry", dest / "registry")
    drop_guard(dest)  # the zero-cost engine has no zero-cost guard: measure orchestration only
    drop_shadow(dest)
    # The zero-cost engine always answers the first category (accuracy 0.25): lower the floor so the
    # first release is promoted and the second is compared against it.
    gates = dest / "registry" / APP / "gates.yaml"
    gates.write_text(gates.read_text().replace("min: 0.2", "min: 0.0"))
    ev = dest / "evalsets" / APP
    ev.mkdir(parents=True)
    shutil.copy(REPO / "evalsets" / APP / "tickets.card.yaml", ev / "tickets.card.yaml")
    real = [json.loads(line) for line in (REPO / "evalsets" / APP / "tickets.jsonl").read_text().splitlines()]
    rng = random.Random(seed)
    with (ev / "tickets.jsonl").open("w") as fh:
        for i in range(rows):
            base = real[i % len(real)]
            row = {
                "id": f"s{i:07d}",
                "vars": {"ticket": f"{base['vars']['ticket']} (ref {rng.randrange(10**6)})"},
                "reference": base["reference"],
                "tags": base["tags"],
            }
            fh.write(json.dumps(row) + "\n")
    return dest
