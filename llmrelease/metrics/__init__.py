"""Local `evaluate` metric modules (no metric hub at run time): ``evaluate.load(str(path))``.

Each module returns its aggregate and the per-item scores, because gates compare items pairwise.
"""

from pathlib import Path

METRICS_DIR = Path(__file__).parent

__all__ = ["METRICS_DIR"]
