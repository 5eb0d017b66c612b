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


def make_project(dest: Path, rows: int, *, seed: int = 0) -> Path:
    """A project directory with registry/ copied from the repo and ``rows`` synthetic tickets."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(REPO / "registry", dest / "registry")
    # The zero-cost engine always answers the first category (accuracy 0.25): lower the floor so the
    # first release is promoted and the second is compared against it.
    gates = dest / "registry" / APP / "gates.yaml"
    gates.write_text(gates.read_text().replace("min: 0.26", "min: 0.0"))
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
