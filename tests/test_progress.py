"""The progress bar: a preparing phase, then the real count."""

from __future__ import annotations

from llmrelease.tasks.progress import progress_bar


def test_preparing_phase_turns_into_the_counted_bar(capsys) -> None:
    with progress_bar("generating app", 3, preparing="loading engine") as advance:
        advance(0)
        advance(1)
        advance(2)
    err = capsys.readouterr().err
    assert "generating app" in err and "3/3" in err


def test_bar_without_preparing_appears_on_first_advance(capsys) -> None:
    with progress_bar("re-evaluating champion", 2) as advance:
        pass
    assert "re-evaluating" not in capsys.readouterr().err
    with progress_bar("re-evaluating champion", 2) as advance:
        advance(2)
    assert "2/2" in capsys.readouterr().err
