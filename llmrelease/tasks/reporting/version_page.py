"""What the MLflow model-version page and the Prefect run say about a release, in markdown.

People promote in the MLflow UI, so the version page must say why a version may or may not be
champion without opening a JSON artifact: the verdict, every gate (value, rule, champion, interval),
the guard and shadow lines and links to the run and its reports. MLflow renders a version's
description as markdown, and keeps at most 5,000 characters of it (the column is VARCHAR(5000) on
every backend but SQLite, which does not check), so the summary is built to fit, and a short
history of what happened to the version (promoted, rolled back, overridden, reverted) is kept
below it, newest last, the oldest dropped first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "DESCRIPTION_LIMIT",
    "HISTORY_MARKER",
    "guard_rates_text",
    "release_summary",
    "gate_markdown_table",
    "with_history",
]

DESCRIPTION_LIMIT = 5000
HISTORY_MARKER = "#### History"
_BADGE = {"pass": "PASSED", "fail": "FAILED", "inconclusive": "INCONCLUSIVE"}
_VERDICT = {"pass": "pass", "fail": "**FAIL**", "inconclusive": "*inconclusive*", "skipped": "skipped"}


def _num(v: Any, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    return f"{v:+.4g}" if signed else f"{v:.4g}"


def _cell(text: Any) -> str:
    """Markdown table cells: no pipes, no newlines (they would end the cell or the row)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def gate_markdown_table(report: Mapping[str, Any], *, evidence: bool = False) -> str:
    """The gate table as a GitHub-flavoured markdown table (MLflow and Prefect render both)."""
    head = ["gate", "verdict", "value", "champion", "delta", "interval", "rule"]
    if evidence:
        head.append("evidence")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in report.get("gates", []):
        interval = (
            f"{_num(g.get('ci_low'))} … {_num(g.get('ci_high'))}"
            if g.get("ci_low") is not None or g.get("ci_high") is not None
            else "–"
        )
        row = [
            f"`{g['name']}`",
            _VERDICT.get(g.get("verdict", ""), g.get("verdict", "")),
            _num(g.get("value")),
            _num(g.get("champion_value")),
            _num(g.get("delta"), signed=True),
            interval,
            g.get("threshold") or "",
        ]
        if evidence:
            row.append(g.get("evidence") or "")
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)


def _stats_line(report: Mapping[str, Any]) -> str:
    st = report.get("statistics") or {}
    if not st:
        return ""
    conf = st.get("confidence")
    parts = [f"one-sided {conf:.0%} bounds" if isinstance(conf, int | float) else ""]
    if st.get("correction") and st.get("family_size"):
        parts.append(f"{st['correction']} across {st['family_size']} comparison gate(s)")
    if st.get("sequential"):
        parts.append(f"sequential ({st.get('sequential_method')})")
    return "Intervals: " + ", ".join(p for p in parts if p) + "."


def guard_rates_text(rates: Mapping[str, float]) -> str:
    """The guard summary's rates as one phrase (``prompt unsafe 0.0%, ...``): the CLI's outcome
    panel and the version page say them the same way."""
    return ", ".join(
        f"{k.removeprefix('guard.').removesuffix('_rate').replace('_', ' ')} {v:.1%}"
        for k, v in sorted(rates.items())
    )


def _guard_line(guard: Mapping[str, Any] | None) -> str | None:
    if not guard:
        return None
    rates = guard_rates_text(guard.get("rates") or {})
    return f"**Guard:** {guard.get('flagged_count', 0)} item(s) flagged ({rates or 'no rates'})."


def _shadow_line(shadow: Mapping[str, Any] | None) -> str | None:
    if not shadow:
        return None
    m = shadow.get("metrics") or {}
    bits = [f"{shadow.get('requests', 0)} replayed requests"]
    for label, key, fmt in (
        ("TTFT p95", "ttft_p95_s", ".3f"),
        ("cost/1k", "cost_per_1k_requests", ".4f"),
        ("errors", "error_rate", ".0%"),
    ):
        a, b = m.get(f"champion.{key}"), m.get(f"candidate.{key}")
        if a is not None and b is not None:
            bits.append(f"{label} {b:{fmt}} vs champion {a:{fmt}}")
    if "shadow.agreement_exact" in m:
        bits.append(f"outputs identical {m['shadow.agreement_exact']:.0%}")
    return "**Shadow:** " + "; ".join(bits) + "."


def release_summary(
    *,
    app: str,
    version: str,
    prompt_version: int | str | None,
    verdict: str,
    report: Mapping[str, Any],
    run_id: str,
    champion_scores: str | None = None,
    guard: Mapping[str, Any] | None = None,
    shadow: Mapping[str, Any] | None = None,
    links: Sequence[tuple[str, str]] = (),
    status_line: str | None = None,
) -> str:
    """The version page's summary of its release: verdict first, then why.

    ``verdict`` is the version's verdict tag (passed / failed / inconclusive / test-engine);
    ``links`` are (label, href) pairs, relative to the MLflow UI (``#/experiments/...``)."""
    decision = report.get("decision", "")
    badge = _BADGE.get(decision, decision.upper())
    failed = [g["name"] for g in report.get("gates", []) if g.get("verdict") == "fail"]
    undecided = [g for g in report.get("gates", []) if g.get("verdict") == "inconclusive"]
    head = f"### llmrelease: gates {badge}"
    if verdict not in ("passed", "failed", "inconclusive"):
        head += f" (verdict: {verdict}; never promoted)"
    lines = [head, ""]
    if failed:
        lines.append("Failed: " + ", ".join(f"`{n}`" for n in failed) + ".")
    if undecided:
        need = [g.get("items_needed") for g in undecided if g.get("items_needed")]
        lines.append(
            "Inconclusive: "
            + ", ".join(f"`{g['name']}`" for g in undecided)
            + (f" (about {max(need)} items would decide)." if need else ".")
        )
    champ = report.get("champion_version")
    lines.append(
        f"Model version v{version} of `{app}` with prompt version {prompt_version or '–'}, "
        f"compared with champion {'v' + str(champ) if champ else '(none)'}"
        + (f"; champion scores {champion_scores}" if champion_scores else "")
        + "."
    )
    if status_line:
        lines.append(status_line)
    lines += ["", gate_markdown_table(report), ""]
    stats = _stats_line(report)
    if stats:
        lines.append(stats)
    for extra in (_guard_line(guard), _shadow_line(shadow)):
        if extra:
            lines += ["", extra]
    link_md = " · ".join(f"[{label}]({href})" for label, href in links)
    lines += ["", f"Release run `{run_id}`" + (f": {link_md}" if link_md else "") + "."]
    text = "\n".join(lines)
    if len(text) > DESCRIPTION_LIMIT - 600:  # leave room for the history
        # Many gates: cut whole rows; the failed gates are named above the table.
        cut = text[: DESCRIPTION_LIMIT - 700].rsplit("\n", 1)[0]
        text = cut + "\n\n*(table cut: see the release report)*"
    return text


def with_history(description: str | None, line: str, *, limit: int = DESCRIPTION_LIMIT) -> str:
    """``description`` with ``line`` appended under the history heading (added if missing), the
    oldest history lines dropped until the whole fits in ``limit`` characters."""
    body, _, history = (description or "").partition(HISTORY_MARKER)
    body = body.rstrip()
    entries = [h for h in history.strip().splitlines() if h.strip()]
    entries.append(f"- {line.strip()}")

    def render() -> str:
        return (body + "\n\n" if body else "") + HISTORY_MARKER + "\n" + "\n".join(entries)

    text = render()
    while len(text) > limit and len(entries) > 1:
        entries.pop(0)
        text = render()
    if len(text) > limit:  # one line longer than the page: cut the line, not the summary
        text = text[:limit]
    return text
