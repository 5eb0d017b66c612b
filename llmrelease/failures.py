"""Turn a failure the user's input did not cause into one line a person can act on (exit code 4).

The CLI calls this for every exception that is not one of llmrelease's own: a tracking server that
does not answer, an artifact store that lost a file, an engine that died. The line names the thing
that failed and the first line of its error; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import os

from llmrelease.errors import InfrastructureError
from llmrelease.store import redact_uri, scrub_credentials

__all__ = ["as_infrastructure_error"]


def _first_line(exc: BaseException) -> str:
    text = scrub_credentials(str(exc).strip())
    line = text.splitlines()[0] if text else ""
    return (line[:300] + "...") if len(line) > 300 else line


def _is_connection_error(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(exc)}
    if names & {
        "ConnectionError",
        "ConnectError",
        "ConnectionRefusedError",
        "MaxRetryError",
        "ConnectTimeout",
    }:
        return True
    text = " ".join(str(e) for e in _chain(exc)).lower()
    return any(s in text for s in ("connection refused", "max retries exceeded", "failed to establish"))


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        out.append(cur)
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return out


def as_infrastructure_error(exc: BaseException) -> InfrastructureError:
    """One line: what failed, where, and its own first line."""
    if isinstance(exc, InfrastructureError):
        return exc
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    kind = type(exc).__name__
    if _is_connection_error(exc):
        where = f" at {redact_uri(uri)}" if uri else ""
        cause = f"a server did not answer{where}: {_first_line(exc)}"
    elif kind == "MlflowException" or type(exc).__module__.startswith("mlflow"):
        cause = f"MLflow refused a request: {_first_line(exc)}"
    elif "EngineDead" in kind or "EngineCore" in kind or "vllm" in type(exc).__module__:
        cause = f"the vLLM engine failed ({kind}): {_first_line(exc)}"
    else:
        cause = f"{kind}: {_first_line(exc)}"
    return InfrastructureError(f"the release could not complete; {cause} (details: --verbose)")
