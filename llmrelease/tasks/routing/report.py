"""The router as one self-contained HTML page (``router_report.html``): the verdict, what each route and
the router cost and score with their intervals, the random router at equal cost, the gates, and the
cost-quality curve people read routing from.

Same rules as the release page (``tasks.reporting.release_html``): no script, nothing loaded, inline
SVG from matplotlib without pyplot, every value from a model or a file escaped, and the same inputs
render the same bytes. Pure: numbers in, a string out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmrelease.tasks.gates.decisions import GateReport
from llmrelease.tasks.reporting.release_html import _CSS, _e, _figure, _gates_section, _header, _svg
from llmrelease.tasks.routing.cascade import Curve
from llmrelease.tasks.routing.evidence import Estimate, RouterEvidence

__all__ = ["router_html", "HOW_TO_READ", "how_to_read", "best_route"]

HOW_TO_READ = (
    "Each dot on the solid line is the router at one threshold: from the left (nothing escalated: "
    "the cheap route alone) to the right (everything escalated: both routes paid for every request). "
    "The dashed line is a random router that sends a share of requests straight to the strong route: "
    "what any router must beat at the same cost. A router is worth running where its line is above "
    "the dashed one; the ringed dot is the threshold this release uses. The second plot shows the "
    "share of the quality gap recovered (PGR) against the share of requests escalated: the diagonal is "
    "random (area 0.5), and APGR is the area under the router's line."
)
"""For a cascade; :func:`how_to_read` gives the classifier's version."""


def how_to_read(pays_both: bool) -> str:
    if pays_both:
        return HOW_TO_READ
    return (
        HOW_TO_READ.replace("both routes paid for every request", "the strong route alone")
        .replace("nothing escalated", "nothing sent to the strong route")
        .replace("everything escalated", "everything sent to it")
        .replace("requests escalated", "requests sent to the strong route")
        + " The classifier's line is drawn from out-of-fold predictions: no item is placed by a "
        "classifier that saw its label."
    )


def _cell(est: Estimate | None, fmt: str = ".3f", scale: float = 1.0) -> str:
    if est is None or est.value is None:
        return "&ndash;"
    text = f"{est.value * scale:{fmt}}"
    if est.low is not None and est.high is not None:
        text += f"<br><small>[{est.low * scale:{fmt}}, {est.high * scale:{fmt}}]</small>"
    return text


def _summary(ev: RouterEvidence) -> str:
    v = ev.value
    cheap, strong = ev.cheap, ev.strong
    quality, cost_ratio = v("router.quality"), v("router.cost_ratio")
    share, pgr = v("router.strong_share"), v("router.pgr")
    parts = [
        f"The router answers {1 - (share or 0):.0%} of requests with '{cheap}' and escalates "
        f"{share or 0:.0%} to '{strong}' (both calls paid)."
        if ev.pays_both
        else f"The router's classifier sends {1 - (share or 0):.0%} of requests to '{cheap}' and "
        f"{share or 0:.0%} to '{strong}' (one call each)."
    ]
    if quality is not None and cost_ratio is not None:
        parts.append(
            f"It scores {quality:.3f} against '{strong}' alone at {v(f'routes.{strong}.quality'):.3f} "
            f"and '{cheap}' alone at {v(f'routes.{cheap}.quality'):.3f}, for {cost_ratio:.0%} of "
            f"the cost of '{strong}'."
        )
    if pgr is not None:
        parts.append(f"That recovers {pgr:.0%} of the gap between the routes.")
    else:
        parts.append(f"'{strong}' is not better than '{cheap}' on these items: there is no gap to recover.")
    best = best_route(ev)
    parts.append(
        f"The best single route on these items is '{best}' "
        f"({v(f'routes.{best}.quality'):.3f} at {v(f'routes.{best}.cost_per_1k_requests'):.4g} per 1,000 "
        "requests)."
    )
    rq = v("random.quality")
    if rq is not None:
        parts.append(f"A random router at the same cost would score {rq:.3f}.")
    return " ".join(parts)


def best_route(ev: RouterEvidence) -> str:
    """The route that scores higher alone; on a tie, the cheaper one."""
    return min(
        (ev.cheap, ev.strong),
        key=lambda r: (
            -(ev.value(f"routes.{r}.quality") or 0.0),
            ev.value(f"routes.{r}.cost_per_1k_requests"),
        ),
    )


def _table(ev: RouterEvidence) -> str:
    est = ev.estimates
    c, s = ev.cheap, ev.strong
    router_cost = est["router.cost_per_1k_requests"]
    rows = [
        (f"{c} alone", est[f"routes.{c}.quality"], est[f"routes.{c}.cost_per_1k_requests"], "0"),
        (f"{s} alone", est[f"routes.{s}.quality"], est[f"routes.{s}.cost_per_1k_requests"], "1"),
        ("router", est["router.quality"], router_cost, _cell(est["router.strong_share"], ".2f")),
        (
            "random router at equal cost",
            est["random.quality"],
            router_cost,
            _cell(est["random.strong_share"], ".2f"),
        ),
    ]
    out = [
        f"<table><tr><th class='l'>who answers</th><th>quality<br><small>{ev.level:.0%} interval</small></th>"
        "<th>cost per 1,000 requests</th><th>share sent to the strong route</th></tr>"
    ]
    for label, quality, cost, share in rows:
        out.append(
            f"<tr><td class='l'>{_e(label)}</td><td>{_cell(quality)}</td><td>{_cell(cost, '.4g')}</td>"
            f"<td>{share}</td></tr>"
        )
    out.append("</table>")
    numbers = [
        ("APGR", "router.apgr", "area under PGR vs strong share; random 0.5"),
        ("CPT(50%)", "router.cpt50", "strong share needed to recover half the gap"),
        ("CPT(80%)", "router.cpt80", "strong share needed to recover 80% of the gap"),
        ("PGR at the threshold", "router.pgr", "share of the gap recovered"),
        ("router - random at equal cost", "router.vs_random", "quality, paired by item"),
        ("router - strong route", "router.vs_strong", "quality, paired by item"),
        ("cost / strong route's", "router.cost_ratio", ""),
    ]
    out.append(
        "<table><tr><th class='l'>router number</th>"
        f"<th>value<br><small>{ev.level:.0%} interval</small></th><th class='l'>meaning</th></tr>"
    )
    for label, key, meaning in numbers:
        out.append(
            f"<tr><td class='l'>{_e(label)}</td><td>{_cell(est[key])}</td>"
            f"<td class='l'>{_e(meaning)}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def _curve_plots(ev: RouterEvidence, curve: Curve) -> str:
    x_cost, y_q = curve.cost[0] * 1000, curve.quality[0]
    v = ev.value
    cheap = (v(f"routes.{ev.cheap}.cost_per_1k_requests"), v(f"routes.{ev.cheap}.quality"))
    strong = (v(f"routes.{ev.strong}.cost_per_1k_requests"), v(f"routes.{ev.strong}.quality"))
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(x_cost, y_q, "-o", color="#dd8452", markersize=3, label="router (threshold sweep)")
    ax.plot([cheap[0], strong[0]], [cheap[1], strong[1]], "--", color="#777", label="random router")
    ax.plot(*cheap, "s", color="#4c72b0", label=ev.cheap)
    ax.plot(*strong, "D", color="#55a868", label=ev.strong)
    op = (v("router.cost_per_1k_requests"), v("router.quality"))
    ax.plot(
        *op, "o", markersize=11, markerfacecolor="none", markeredgecolor="#c44e52", label="this threshold"
    )
    ax.set_xlabel("cost per 1,000 requests")
    ax.set_ylabel("quality")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    ax2 = fig.add_subplot(1, 2, 2)
    share, pgr = curve.strong_share[0], curve.pgr[0]
    ax2.plot([0, 1], [0, 1], "--", color="#777", label="random (APGR 0.5)")
    if not np.isnan(pgr).all():
        ax2.plot(
            share, pgr, "-o", color="#dd8452", markersize=3, label=f"router (APGR {v('router.apgr'):.2f})"
        )
        ax2.fill_between(share, 0, pgr, color="#dd8452", alpha=0.12)
        for level, key in ((0.5, "router.cpt50"), (0.8, "router.cpt80")):
            c = v(key)
            if c is not None:
                ax2.plot([c], [level], "x", color="#c44e52")
                ax2.annotate(
                    f"CPT({level:.0%}) {c:.2f}",
                    (c, level),
                    fontsize=7,
                    xytext=(4, -10),
                    textcoords="offset points",
                )
    ax2.set_xlabel("share escalated to the strong route")
    ax2.set_ylabel("gap recovered (PGR)")
    ax2.legend(fontsize=7, loc="lower right")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return _svg(fig, "router cost-quality curve and gap recovered against share escalated")


def router_html(
    *,
    app: str,
    router_version: str,
    quality_metric: str,
    threshold: float,
    threshold_source: str,
    evidence: RouterEvidence,
    report: GateReport,
    routes: dict[str, str],
    links: list[tuple[str, str]] | None = None,
    traffic: str | None = None,
    policy: str | None = None,
) -> str:
    """The page; ``routes`` maps each route to a one-line description (prompt and model versions);
    ``traffic`` is one sentence on the router over the app's replayed traffic; ``policy`` one line
    on how the router decides."""
    data: dict[str, Any] = report.to_dict()
    subtitle = [
        f"Quality score: {quality_metric}; {evidence.n} items"
        + (f" in {evidence.clusters} clusters" if evidence.clusters != evidence.n else "")
        + f"; threshold {threshold:.4f} ({threshold_source}).",
        *(f"Route {name}: {desc}" for name, desc in routes.items()),
        *([f"Policy: {policy}"] if policy else []),
    ]
    body = [
        _header(f"{app}: router {router_version}", data, subtitle, links or []),
        f"<p>{_e(_summary(evidence))}</p>",
        "<h2>Cost and quality</h2>",
        _curve_plots(evidence, evidence.curve),
        f"<p class='note'>{_e(how_to_read(evidence.pays_both))}</p>",
        _table(evidence),
        *([f"<h2>On replayed traffic</h2><p>{_e(traffic)}</p>"] if traffic else []),
        _gates_section(data, candidate="router", reference="strong route"),
        f"<p class='note'>Intervals: percentile bootstrap, {evidence.resamples:,} resamples "
        f"(seed {evidence.seed}), the threshold held fixed.</p>",
    ]
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(app)} router {_e(router_version)}</title><style>{_CSS}</style></head><body>"
        + "".join(body)
        + "</body></html>"
    )
