"""Which model and prompt version answered each logged request.

A feedback row is only worth keeping if it says which release it is about: a regression evalset
built from answers of a prompt retired last month tests nothing new, and a fine-tuning set mixing
versions cannot be traced back. A request is attributed from what the log says (``served``, checked
against the registry) or, when the log says nothing or only the alias, from the champion history
the pipeline records (:mod:`llmrelease.tasks.promotion.champion_history`) at the request's time.
What cannot be attributed is listed with why, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from llmrelease.mlflow_registry import CHAMPION
from llmrelease.specs import ServedBy
from llmrelease.tasks.promotion.champion_history import ChampionEvent, champion_at

__all__ = ["Attribution", "attribute"]


@dataclass(frozen=True)
class Attribution:
    model_version: str | None
    prompt_version: int | None
    how: Literal["logged", "history", "none"]
    why: str = ""
    """Why not attributed (``how == "none"``)."""

    @property
    def exact(self) -> bool:
        return self.model_version is not None and self.prompt_version is not None

    @property
    def label(self) -> str:
        return f"v{self.model_version}/prompt v{self.prompt_version}" if self.exact else "unattributed"


def attribute(
    served: ServedBy | None,
    timestamp: datetime,
    *,
    registered: dict[str, int | None],
    history: list[ChampionEvent],
) -> Attribution:
    """``registered``: model version -> the prompt version it was registered with."""
    if served is not None and served.model_version is not None:
        mv = served.model_version
        if mv not in registered:
            known = ", ".join(f"v{v}" for v in sorted(registered, key=int)) or "none"
            return Attribution(
                None, None, "none", f"model version {mv} is not registered (registered: {known})"
            )
        pv = registered[mv]
        if served.prompt_version is not None and pv is not None and served.prompt_version != pv:
            return Attribution(
                None,
                None,
                "none",
                f"the log says prompt v{served.prompt_version}, "
                f"but model v{mv} was registered with prompt v{pv}",
            )
        pv = pv if pv is not None else served.prompt_version
        if pv is None:
            return Attribution(
                None, None, "none", f"model v{mv} has no prompt version, and the log gives none"
            )
        return Attribution(mv, pv, "logged")
    alias = served.alias if served is not None else CHAMPION
    if alias != CHAMPION:
        return Attribution(
            None,
            None,
            "none",
            f"served by '{alias}' without a model_version: only the champion's history is recorded",
        )
    if not history:
        return Attribution(None, None, "none", "no champion history is recorded for the app yet")
    event = champion_at(history, timestamp)
    if event is None:
        first = history[0].at.isoformat()
        return Attribution(None, None, "none", f"before the first recorded champion ({first})")
    if event.prompt_version is None:
        return Attribution(None, None, "none", f"champion v{event.version} has no prompt version")
    return Attribution(event.version, event.prompt_version, "history")
