"""Human-readable reports (rich tables) of a release outcome and of an app's status."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from llmrelease.tasks.reporting.version_page import guard_rates_text

__all__ = [
    "gate_table",
    "plan_table",
    "guard_summary_line",
    "guard_table",
    "outcome_panel",
    "shadow_table",
    "shadow_panel",
    "status_table",
    "router_report",
    "router_status_table",
]

_VERDICT_STYLE = {
    "pass": "bold green",
    "fail": "bold red",
    "inconclusive": "bold yellow",
    "skipped": "yellow",
}
_STATUS = {
    "promoted": ("PROMOTED", "green"),
    "already_champion": ("ALREADY CHAMPION", "green"),
    "rejected": ("REJECTED", "red"),
    "inconclusive": ("NOT PROMOTED (inconclusive: too few items to tell)", "yellow"),
    "conflict": ("NOT PROMOTED (champion moved)", "yellow"),
    "test_engine": ("NOT PROMOTED (test engine: no verdict on the model)", "yellow"),
}


def _num(v: Any, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _p(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.2g}" if v >= 0.01 else f"{v:.1e}"


def gate_table(report: dict[str, Any]) -> Table:
    """One row per gate: the gate (metric, rule), value and champion, the paired delta with its
    interval, the deciding bound and p (raw, then Holm-adjusted), n and the effective n, the MDE,
    and the verdict with what would decide an INCONCLUSIVE one. The caption says how sure every
    bound is. Cells hold two or three lines so the table fits 120 columns."""
    stats = report.get("statistics") or {}
    conf = stats.get("confidence", 0.95)
    holm = stats.get("family_size", 0) > 1 and stats.get("correction") == "holm"
    table = Table(
        title="Gate report", header_style="bold", caption=_gate_caption(stats), caption_justify="left"
    )
    table.add_column("gate\nmetric / rule", max_width=30, overflow="ellipsis")
    table.add_column("value\nchampion", justify="right", no_wrap=True)
    table.add_column(f"delta\n[{2 * conf - 1:.0%} CI]", justify="right", no_wrap=True)
    table.add_column(f"bound\n{conf:.0%}" + (" / Holm" if holm else ""), justify="right", no_wrap=True)
    table.add_column("p" + ("\nHolm" if holm else ""), justify="right", no_wrap=True)
    table.add_column("n\neff.", justify="right", no_wrap=True)
    table.add_column("MDE", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True, min_width=7)
    for g in report.get("gates", []):
        comparison = g.get("kind") == "non_inferiority" and g.get("bound") is not None
        value = _num(g["value"]) + (
            "\n" + _num(g["champion_value"]) if g.get("champion_value") is not None else ""
        )
        interval = "-"
        if g.get("ci_low") is not None and (comparison or g.get("on", "value") != "value"):
            signed = comparison
            point = _num(g["delta"], True) if comparison else ""
            interval = f"{point}\n[{_short(g['ci_low'], signed)}, {_short(g['ci_high'], signed)}]".lstrip(
                "\n"
            )
        bound = _num(g.get("bound"), comparison)
        p = _p(g.get("p_value"))
        if comparison and holm:
            bound += "\n" + _num(g.get("bound_adjusted"), True)
            p += "\n" + _p(g.get("p_adjusted"))
        n = "-" if g.get("n") is None else str(g["n"])
        if g.get("effective_n") is not None:
            n += f"\n{g['effective_n']:.0f}"
        verdict = Text(g["verdict"].upper(), style=_VERDICT_STYLE[g["verdict"]])
        if g["verdict"] == "inconclusive" and g.get("items_needed"):
            verdict += Text(f"\n~{g['items_needed']} items", style="yellow")
        rule = g["threshold"]
        if g.get("on", "value") != "value" and g.get("method"):
            rule += f", {g['method'].split(' (')[0]}"  # which interval: Wilson, Clopper-Pearson, bootstrap
        table.add_row(
            Text(g["name"]) + Text("\n" + g["metric"], style="dim") + Text("\n" + rule, style="cyan"),
            value,
            interval,
            bound,
            p,
            n,
            _num(g.get("mde")),
            verdict,
        )
    return table


def _short(v: float, signed: bool) -> str:
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def _gate_caption(stats: dict[str, Any]) -> str | None:
    if not stats:
        return None
    conf, family = stats.get("confidence", 0.95), stats.get("family_size", 0)
    parts = [f"bounds are one-sided {conf:.0%}"]
    if family > 1 and stats.get("correction") == "holm":
        parts.append(f"Holm across {family} comparison gates (any false pass <= {1 - conf:.0%})")
    parts.append(f"MDE at {stats.get('power', 0.8):.0%} power")
    parts.append("INCONCLUSIVE: nothing failed, but too few items to tell; never promotes")
    return "; ".join(parts)


def plan_table(plan: dict[str, Any]) -> Table:
    """One row per comparison gate: today's evalset, its MDE, the items the gate needs, and what
    generating them would cost and take at the champion's recorded rates."""
    cur = plan.get("currency") or ""
    stats = plan.get("statistics", {})
    table = Table(
        title=f"{plan['app']}: evalset size per gate (champion v{plan['champion_version']})",
        header_style="bold",
        caption=(
            f"one-sided {stats.get('confidence', 0.95):.0%}, planned at Holm's first step for the family; "
            "spread: observed = the champion against its predecessor, else assumed unrelated (conservative)"
        ),
        caption_justify="left",
    )
    for col in (
        "gate\nmetric",
        "margin\n/ gap",
        "items now\n(clusters)",
        "MDE now",
        "items\nneeded",
        "cost",
        "time",
        "",
    ):
        table.add_column(col, justify="left" if col.startswith("gate") or not col else "right", no_wrap=True)
    for g in plan["gates"]:
        needed = g["items_needed"]
        clusters = f"\n({g['clusters_now']})" if g["clusters_now"] != g["n_now"] else ""
        cost = "-" if g["cost_needed"] is None else f"{g['cost_needed']:.4f} {cur}".strip()
        time = "-" if g["seconds_needed"] is None else _duration(g["seconds_needed"])
        verdict = Text("enough", style="green") if g["enough"] else Text("too small", style="bold yellow")
        table.add_row(
            Text(g["gate"]) + Text("\n" + g["metric"], style="dim"),
            f"{g['margin']:.3g}",
            f"{g['n_now']}{clusters}",
            _num(g["mde_now"]),
            "-" if needed is None else f"{needed:,}",
            cost,
            time,
            verdict
            + Text("\n" + g["sd_source"].split(":")[0].replace("bound gate", "on a bound"), style="dim"),
        )
    return table


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def guard_summary_line(guard: dict[str, Any]) -> str:
    """One line: flagged count, rates, time per item (markup)."""
    summary = guard_rates_text(guard.get("rates", {}))
    per_item = guard.get("s_per_item")
    timing = f"; {per_item:.3f} s per item" if per_item is not None else ""
    flagged = guard.get("flagged_count", 0)
    color = "red" if flagged else "green"
    return f"guard: [bold {color}]{flagged} flagged[/] ({summary}{timing})"


_SHADOW_ROWS = (
    ("TTFT p50 (s)", "ttft_p50_s", ".3f"),
    ("TTFT p95 (s)", "ttft_p95_s", ".3f"),
    ("time/token p50 (s)", "tpot_p50_s", ".4f"),
    ("time/token p95 (s)", "tpot_p95_s", ".4f"),
    ("prefix-cache hit", "prefix_cache_hit_rate", ".0%"),
    ("cost / 1k requests", "cost_per_1k_requests", ".5f"),
    ("  saved by the cache", "prefix_cache_saving_per_1k", ".5f"),
    ("schema conforms", "schema_conforms_rate", ".0%"),
    ("guard: unsafe responses", "guard_response_unsafe_rate", ".0%"),
    ("errors", "error_rate", ".0%"),
)


def shadow_agreement(shadow: dict[str, Any]) -> str:
    m = shadow.get("metrics", {})
    agree = []
    if "shadow.agreement_exact" in m:
        agree.append(f"outputs identical {m['shadow.agreement_exact']:.0%}")
    if "shadow.agreement_rouge_l" in m:
        agree.append(f"ROUGE-L {m['shadow.agreement_rouge_l']:.2f}")
    if "shadow.length_ks_pvalue" in m:
        agree.append(f"output length KS p={m['shadow.length_ks_pvalue']:.3g}")
    return "shadow: " + "; ".join(agree) if agree else ""


def shadow_table(shadow: dict[str, Any]) -> Table:
    """Champion and candidate on the same replayed requests: the numbers production teams watch."""
    m = shadow.get("metrics", {})
    # How the two sides were timed (never co-batched): latency ratios mean nothing without it.
    timing = next((n for n in shadow.get("notes", []) if n.startswith("timing:")), None)
    table = Table(
        title=f"Shadow: {shadow.get('requests', 0)} replayed requests", header_style="bold", caption=timing
    )
    for col, justify in (("", "left"), ("champion", "right"), ("candidate", "right"), ("ratio", "right")):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for label, key, fmt in _SHADOW_ROWS:
        a, b = m.get(f"champion.{key}"), m.get(f"candidate.{key}")
        if a is None and b is None:
            continue
        ratio = f"{b / a:.2f}x" if a and b is not None and not fmt.endswith("%") else ""
        table.add_row(label, "-" if a is None else f"{a:{fmt}}", "-" if b is None else f"{b:{fmt}}", ratio)
    return table


def guard_table(guard: dict[str, Any], limit: int = 10) -> Table:
    """The flagged items a reviewer should read first (responses before prompts)."""
    shown = guard.get("flagged", [])[:limit]
    more = guard.get("flagged_count", 0) - len(shown)
    table = Table(
        title="Flagged by the guard",
        caption=f"... and {more} more in guard_report.json" if more > 0 else None,
        header_style="bold",
    )
    for col in ("evalset", "item", "prompt", "response", "tags"):
        table.add_column(col, no_wrap=col != "tags")
    for row in shown:
        table.add_row(
            row["evalset"],
            row["id"],
            row.get("prompt") or "-",
            row.get("response") or "-",
            ", ".join(row.get("tags") or []) or "-",
        )
    return table


def outcome_panel(outcome: dict[str, Any], ui_command: str | None = None) -> Panel:
    label, color = _STATUS[outcome["status"]]
    lines = [
        f"app [bold]{outcome['app']}[/]: candidate model version [bold]v{outcome['candidate_version']}[/] "
        f"(prompt version {outcome['prompt_version']})",
        f"champion: {_v(outcome['champion_before'])} -> {_v(outcome['champion_after'])}",
    ]
    if outcome.get("shadow"):
        lines.append(shadow_agreement(outcome["shadow"]))
    m = outcome.get("metrics") or {}
    guard = outcome.get("guard")
    if m:
        serving = (
            f"generation: {m.get('serving.items', 0):.0f} items, "
            f"{m.get('serving.tokens_per_s', 0):.0f} output tokens/s, "
            f"latency p50 {m.get('serving.latency_p50_s', 0):.2f}s"
        )
        if "serving.ttft_p50_s" in m:
            serving += f", TTFT p50 {m['serving.ttft_p50_s']:.2f}s"
        if "cost.per_1k_requests" in m:
            serving += f", cost {m['cost.per_1k_requests']:.4f} per 1k requests"
        lines.append(serving)
    if guard:
        lines.append(guard_summary_line(guard))
        if guard.get("description"):
            lines.append(f"[dim]  {guard['description']}[/]")
    lines += [f"- {n}" for n in outcome.get("notes", [])]
    if outcome.get("run_id"):
        lines.append(f"MLflow run: {outcome['run_id']}  ({outcome['tracking_uri']})")
    tables: list[Any] = []
    if guard and guard.get("flagged"):
        tables.append(guard_table(guard))
    if outcome.get("shadow"):
        tables.append(shadow_table(outcome["shadow"]))
    return _panel(label, color, outcome.get("report"), tables, lines, ui_command)


def _panel(
    label: str,
    color: str,
    report: dict[str, Any] | None,
    tables: list[Any],
    lines: list[str],
    ui_command: str | None,
) -> Panel:
    """Gate table first, then the step tables, then the text lines and how to open the MLflow UI."""
    if ui_command:
        lines = [*lines, f"open the MLflow UI: [bold]{ui_command}[/]"]
    parts: list[Any] = [gate_table(report)] if report else []
    parts += tables
    parts.append(Text.from_markup("\n".join(lines)))
    return Panel(Group(*parts), title=f"[bold {color}]{label}[/]", border_style=color)


def shadow_panel(outcome: dict[str, Any], ui_command: str | None = None) -> Panel:
    """The standalone shadow comparison: its gates, the headline numbers, where the report is."""
    ok = outcome["passed"]
    label, color = ("SHADOW GATES PASSED", "green") if ok else ("SHADOW GATES FAILED", "red")
    lines = [
        f"app [bold]{outcome['app']}[/]: v{outcome['candidate_version']} "
        f"against v{outcome['champion_version']}",
        shadow_agreement(outcome["shadow"]),
    ]
    lines += [f"- {n}" for n in outcome["shadow"].get("notes", [])]
    lines.append(f"MLflow run: {outcome['run_id']}  ({outcome['tracking_uri']}); report: shadow/report.html")
    return _panel(label, color, outcome.get("report"), [shadow_table(outcome["shadow"])], lines, ui_command)


def _v(version: str | None) -> str:
    return f"v{version}" if version else "none"


def _prompt_cell(row: dict[str, Any]) -> str:
    cell = str(row.get("prompt_version") or "-")
    if not row.get("agrees", True):
        cell += f" [bold red](prompt alias on {row.get('prompt_alias_version') or 'nothing'})[/]"
    return cell


def status_table(status: dict[str, Any]) -> Table:
    lines = [f"[bold red]MANUAL OVERRIDE[/]: {status['override']}"] if status.get("override") else []
    lines += [f"[bold red]ALIASES DISAGREE[/]: {d}" for d in status.get("disagreements", [])]
    caption = "\n".join(lines) or None
    table = Table(title=f"{status['app']}: aliases", header_style="bold", caption=caption)
    for col in ("alias", "model", "prompt", "verdict", "git commit", "metrics", "eval run"):
        table.add_column(col, no_wrap=True)
    for row in status["aliases"]:
        metrics = "\n".join(f"{k} {v:.3f}" for k, v in sorted(row.get("metrics", {}).items()))
        fb = row.get("feedback")
        if fb:
            lo, hi = fb["negative_share_ci95"]
            # As narrow as the metric lines: the table does not wrap, a wider cell would squeeze the others.
            metrics += f"\nusers: {fb['negative_share']:.0%} neg [{lo:.0%}-{hi:.0%}] n={fb['feedback']}"
        table.add_row(
            row["alias"],
            _v(row.get("version")),
            _prompt_cell(row),
            row.get("verdict") or "-",
            (row.get("git_commit") or "-")[:12],
            metrics or "-",
            (row.get("eval_run_id") or "-")[:12],
        )
    return table


def router_status_table(status: dict[str, Any]) -> Table | None:
    """The router's aliases (``<app>.router``): version, verdict, threshold, last calibration."""
    rows = status.get("router")
    if not rows:
        return None
    table = Table(title=f"{status['app']}.router: aliases", header_style="bold")
    for col in ("alias", "router", "spec", "decision", "threshold", "last calibration on traffic"):
        table.add_column(col, no_wrap=True)
    for row in rows:
        cal = row.get("calibration")
        calibrated = "-"
        if cal:
            where = "within" if cal["within_band"] else "[bold red]OUTSIDE[/]"
            band = f"{cal['target']:.0%}±{cal['band']:.0%}"
            calibrated = f"{cal['share']:.0%} of {cal['requests']}, {where} {band}"
        threshold = row.get("threshold")
        table.add_row(
            row["alias"],
            _v(row.get("version")),
            row.get("router_version") or "-",
            row.get("decision") or "-",
            f"{float(threshold):.4f}" if threshold else "-",
            calibrated,
        )
    return table


_SHOWN = ("drift", "unknown")


def nightly_table(result: dict[str, Any]) -> Table:
    """One row per app: its champion, the drift verdict, and why (drifted metrics, failing gates,
    or the error that kept it from being checked)."""
    table = Table(title="nightly drift check", header_style="bold")
    for col in ("app", "champion", "status", "drifted metrics / failing gates / error"):
        table.add_column(col)
    style = {"ok": "green", "drift": "bold red", "error": "bold red", "unknown": "yellow"}
    for name, rep in result["apps"].items():
        detail = ", ".join(
            [
                *(
                    f"{r['metric']} {r['delta']:+.3f}"
                    for r in rep.get("rows", [])
                    if r.get("drifted") and r.get("delta") is not None
                ),
                *(f"gate {g['name']}" for g in rep.get("failed_gates", [])),
                *([rep["feedback"]["text"]] if (rep.get("feedback") or {}).get("flagged") else []),
                *([rep["router"]["text"]] if (rep.get("router") or {}).get("status") in _SHOWN else []),
            ]
        )
        detail = detail or rep.get("error") or "; ".join(rep.get("notes", [])[:1]) or "-"
        champion = rep.get("champion_version")
        status = Text(rep["status"], style=style.get(rep["status"], ""))
        table.add_row(name, _v(champion) if champion else "-", status, detail)
    return table


def harvest_report(result: dict[str, Any], out: Console) -> None:
    """Per served version: requests, feedback rate and negative share with 95% intervals, top
    reasons; then what was written and what was left out."""
    s = result["summary"]

    def share(v: float | None, ci: list[float] | None) -> str:
        if v is None:
            return "-"
        return f"{v:.1%}" + (f" [{ci[0]:.1%}, {ci[1]:.1%}]" if ci else "")

    table = Table(title=f"feedback on {s['app']} by served version", header_style="bold")
    for col in ("served", "requests", "feedback rate (95% CI)", "negative share (95% CI)", "top reasons"):
        table.add_column(col)
    for row in s["per_version"]:
        reasons = "; ".join(f"{r} ({n})" for r, n in row["top_reasons"][:3]) or "-"
        table.add_row(
            row["served"],
            str(row["requests"]),
            share(row["feedback_rate"], row["feedback_rate_ci95"]),
            share(row["negative_share"], row["negative_share_ci95"]),
            reasons,
        )
    out.print(table)
    att = s["attributed"]
    if att["share"] is not None:
        out.print(
            f"{att['exact']} of {s['feedback']} feedback records ({att['share']:.0%}) attributed to an "
            f"exact model and prompt version ({att['logged']} from the log, "
            f"{att['history']} from the champion history)"
        )
    shown = 10  # the summary file lists every one
    for u in s["unattributed"][:shown]:
        where = f"line {u['line']} ({u['id']})" if u["line"] else f"trace {u['id']}"
        out.print(f"  [yellow]unattributed[/] {where}: {u['why']}", highlight=False)
    if len(s["unattributed"]) > shown:
        out.print(f"  ... and {len(s['unattributed']) - shown} more unattributed (see the summary file)")
    for kind, items in s["left_out"].items():
        for item in items[:shown]:
            out.print(f"  [yellow]not in {kind}[/]: {item}", highlight=False)
        if len(items) > shown:
            out.print(f"  ... and {len(items) - shown} more left out of {kind} (see the summary file)")
    if s["duplicates_dropped"]:
        dropped = s["duplicates_dropped"]
        out.print(f"{dropped} duplicate request(s) dropped (same normalised text; the latest kept)")
    for kind, path in result["files"].items():
        rows = s["snapshots"].get(kind, {}).get("rows")
        count = f"  ({rows} rows)" if rows is not None and kind != "summary" else ""
        out.print(f"{kind:>10}: {path}{count}", soft_wrap=True, highlight=False)
    out.print(f"harvest run {result['run_id']} in {result['tracking_uri']}")
    reg = result["files"].get("regression")
    if reg and s["snapshots"]["regression"]["rows"]:
        out.print(
            "to gate releases on the regression evalset: review it, then copy it and its card into "
            f"evalsets/{s['app']}/ and commit",
            soft_wrap=True,
        )


def console() -> Console:
    """A console at least 120 columns wide when not on a terminal, so logs keep tables readable."""
    c = Console()
    return c if c.is_terminal else Console(width=max(c.width, 120))


def router_report(result: dict[str, Any], out: Console) -> None:
    """Each route alone, the router and the random router at equal cost (quality and cost with their
    intervals), the router numbers, then the gates and where the run is."""
    est, ci = result["estimates"], result["intervals"]
    level = result["interval_level"]

    def cell(key: str, fmt: str = ".3f") -> str:
        v = est.get(key)
        if v is None:
            return "-"
        lo, hi = ci.get(key, [None, None])
        return f"{v:{fmt}}" + (f" [{lo:{fmt}}, {hi:{fmt}}]" if lo is not None and hi is not None else "")

    cheap, strong = list(result["routes"])
    table = Table(
        title=f"{result['app']} router {result['router_version']} on {result['items']} items "
        f"({level:.0%} intervals)",
        header_style="bold",
    )
    for col in ("who answers", "quality", "cost per 1k requests", "share escalated"):
        table.add_column(col)
    rows = [
        (f"{cheap} alone", f"routes.{cheap}.quality", f"routes.{cheap}.cost_per_1k_requests", None),
        (f"{strong} alone", f"routes.{strong}.quality", f"routes.{strong}.cost_per_1k_requests", None),
        ("router", "router.quality", "router.cost_per_1k_requests", "router.strong_share"),
        ("random router, equal cost", "random.quality", "router.cost_per_1k_requests", "random.strong_share"),
    ]
    for n, (label, quality, cost, share) in enumerate(rows):
        table.add_row(label, cell(quality), cell(cost, ".4g"), cell(share, ".2f") if share else str(n))
    out.print(table)
    out.print(
        f"APGR {cell('router.apgr')} (random 0.5), CPT(50%) {cell('router.cpt50', '.2f')}, "
        f"CPT(80%) {cell('router.cpt80', '.2f')}, router - random {cell('router.vs_random', '+.3f')}; "
        f"threshold {result['threshold']:.4f} ({result['threshold_source']})",
        highlight=False,
    )
    if result.get("traffic"):
        t = result["traffic"]
        style = "" if t["within_band"] else "[bold yellow]"
        out.print(
            f"{style}on replayed traffic: {t['summary']}; cost {t['cost_per_1k_requests']:.4g} per 1k",
            highlight=False,
        )
    out.print(gate_table(result["gates"]))
    out.print(
        f"[bold]{result['status'].upper()}[/] {result['router_model']} v{result['version']}: "
        f"{result['note']}",
        highlight=False,
    )
    out.print(
        f"recorded in run {result['run_id']} at {result['tracking_uri']} "
        "(artifact router/router_report.html holds the cost-quality curve)",
        highlight=False,
    )
