"""Process environment for embedded runs: offline, quiet, no telemetry. Set before heavy imports."""

from __future__ import annotations

import logging
import os
import warnings

__all__ = ["configure"]


def configure(*, verbose: bool = False) -> None:
    """Defaults only (``setdefault``): anything the user exported wins."""
    env = {
        # Nothing downloads at run time: models come from packages, metrics from this repo.
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        # Prefect's in-process server: no telemetry heartbeat (it also fights the SQLite lock).
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "VLLM_LOGGING_LEVEL": "INFO" if verbose else "ERROR",
        "MLFLOW_LOGGING_LEVEL": "INFO" if verbose else "WARNING",
        "PREFECT_LOGGING_LEVEL": "INFO" if verbose else "WARNING",
    }
    for k, v in env.items():
        os.environ.setdefault(k, v)
    if not verbose:
        warnings.filterwarnings("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("PYTHONWARNINGS", "ignore")  # engine subprocesses inherit this
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        for name in ("mlflow", "alembic", "httpx", "datasets", "evaluate", "transformers"):
            logging.getLogger(name).setLevel(logging.ERROR)
