"""The shadow comparison as one self-contained HTML page (inline SVG plots), logged to the MLflow run
so a person opens it from the UI: latency CDFs, output-length histograms, cost bars, the numbers."""

from __future__ import annotations

import html
import io
from typing import Any

from llmrelease.engines.base import Measurement

__all__ = ["shadow_html"]

_COLORS = {"champion": "#4c72b0", "candidate": "#dd8452"}


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _cdf(ax: Any, values: dict[str, list[float]], xlabel: str) -> None:
    import numpy as np

    for side, vals in values.items():
        if not vals:
            continue
        xs = np.sort(np.asarray(vals, dtype=float))
        ax.step(xs, np.arange(1, xs.size + 1) / xs.size, where="post", label=side, color=_COLORS[side])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of requests")
    ax.grid(alpha=0.3)
    ax.legend()


def _plots(
    sides: dict[str, list[Measurement]], metrics: dict[str, float], currency: str
) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = {s: [m for m in ms if m.error is None] for s, ms in sides.items()}
    out = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    _cdf(
        axes[0],
        {s: [m.ttft_s for m in ms if m.ttft_s is not None] for s, ms in ok.items()},
        "time to first token (s)",
    )
    _cdf(
        axes[1],
        {s: [t for m in ms if (t := m.tpot_s) is not None] for s, ms in ok.items()},
        "time per output token (s)",
    )
    _cdf(axes[2], {s: [m.latency_s for m in ms] for s, ms in ok.items()}, "total latency (s)")
    out.append(("Latency distributions (CDF)", _svg(fig)))

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    lengths = {s: [m.output_tokens for m in ms] for s, ms in ok.items()}
    top = max([max(v) for v in lengths.values() if v] + [1])
    bins = list(range(0, top + 2, max(1, (top + 1) // 30)))
    for side, vals in lengths.items():
        ax.hist(vals, bins=bins, alpha=0.55, label=side, color=_COLORS[side])
    ax.set_xlabel("output tokens")
    ax.set_ylabel("requests")
    ax.legend()
    out.append(("Output length", _svg(fig)))

    key = "cost_per_1k_requests"
    if any(f"{s}.{key}" in metrics for s in sides):
        fig, ax = plt.subplots(figsize=(6.5, 3.4))
        names = list(sides)
        with_cache = [metrics.get(f"{s}.{key}", 0.0) for s in names]
        without = [metrics.get(f"{s}.{key}_without_cache", 0.0) for s in names]
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], without, 0.4, label="no prefix cache", color="#bbbbbb")
        ax.bar(
            [x + 0.2 for x in xs],
            with_cache,
            0.4,
            label="with prefix cache",
            color=[_COLORS[s] for s in names],
        )
        ax.set_xticks(list(xs), names)
        ax.set_ylabel(f"{currency} per 1,000 requests")
        ax.legend()
        out.append(("Cost per 1,000 requests", _svg(fig)))
    return out


def _table(metrics: dict[str, float]) -> str:
    rows = []
    names = sorted({k.split(".", 1)[1] for k in metrics if k.startswith(("champion.", "candidate."))})
    for name in names:
        a, b = metrics.get(f"champion.{name}"), metrics.get(f"candidate.{name}")
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{'' if a is None else f'{a:.6g}'}</td>"
            f"<td>{'' if b is None else f'{b:.6g}'}</td></tr>"
        )
    shadow = "".join(
        f"<tr><td>{html.escape(k)}</td><td colspan=2>{v:.6g}</td></tr>"
        for k, v in sorted(metrics.items())
        if k.startswith("shadow.")
    )
    return (
        "<table><tr><th>metric</th><th>champion</th><th>candidate</th></tr>"
        + "".join(rows)
        + shadow
        + "</table>"
    )


def shadow_html(
    title: str,
    sides: dict[str, list[Measurement]],
    metrics: dict[str, float],
    *,
    notes: list[str],
    gates: list[dict[str, Any]] | None = None,
    currency: str = "USD",
) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}"
        ".pass{color:#080}.fail{color:#b00;font-weight:bold}.skipped{color:#a60}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>",
    ]
    if gates:
        parts.append(
            "<h2>Shadow gates</h2><table><tr><th>gate</th><th>value</th><th>rule</th><th>verdict</th></tr>"
        )
        for g in gates:
            value = "" if g.get("value") is None else f"{g['value']:.4g}"
            parts.append(
                f"<tr><td>{html.escape(g['name'])}<br><small>{html.escape(g['metric'])}</small></td>"
                f"<td>{value}</td><td>{html.escape(g['threshold'])}</td>"
                f"<td class='{g['verdict']}'>{g['verdict'].upper()}</td></tr>"
            )
        parts.append("</table>")
    for heading, svg in _plots(sides, metrics, currency):
        parts.append(f"<h2>{html.escape(heading)}</h2>{svg}")
    parts.append("<h2>All numbers</h2>" + _table(metrics) + "</body></html>")
    return "".join(parts)
