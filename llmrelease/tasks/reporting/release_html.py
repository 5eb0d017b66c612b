"""The release as one self-contained HTML page (``release_report.html``), logged to the MLflow run so
a person can read why a candidate was or was not promoted: the verdict, the gate table with its
evidence, how every score moves per evalset and per tag against the champion on the same items, the
items on which the two disagree, and plots.

The page is opened inside MLflow's artifact viewer (an iframe, often sandboxed) and from disk, so it
has no script and loads nothing: CSS is inline and plots are inline SVG drawn by matplotlib without
pyplot (no GUI backend, no global figure state). Everything that came from a model or a dataset is
HTML-escaped. The same inputs render the same bytes (fixed SVG id salt, no dates), so a report can
be compared across reruns.

Pure: records and a gate report in, a string out. The records are streamed through
:class:`ReleaseReportBuilder` chunk by chunk, which keeps running sums, not items, so a 100k-item
release is reported in bounded memory.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ReleaseReportBuilder"]

Direction = Literal["higher", "lower"]

NON_SCORE_FIELDS = frozenset(
    {"evalset", "id", "output", "reference", "tags"}
    | {"prompt_tokens", "output_tokens", "latency_s", "ttft_s", "mean_logprob"}
)
"""Record fields that are never scores, whatever their type (guard_* fields are skipped too);
``mean_logprob`` is the model's confidence in its answer, not a judgement of it."""

GUARD_CHECKS = ("prompt", "response")
"""A record's ``guard_<check>`` label (``safe``, ``unsafe:S1``, ``unparsed``) becomes the 0/1 score
``<evalset>.guard_<check>_unsafe``, the per-item metric the guard gates compare (unparsed counts as
unsafe, as the guard step counts it)."""

UNTAGGED = "(no tag)"
MAX_TAG_ROWS = 30
"""Per metric, the tag rows shown (worst first); the rest are counted in a note."""
MAX_TEXT = 400
"""Characters of an output or reference kept for a disagreement example."""
MAX_PLOTTED_METRICS = 40
_EPS = 1e-9

_COLORS = {"champion": "#4c72b0", "candidate": "#dd8452"}
_EVALSET_COLORS = ("#55a868", "#8172b3", "#c44e52", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")
_BADGE = {
    "pass": ("PASS", "passed"),
    "fail": ("FAIL", "failed"),
    "inconclusive": ("INCONCLUSIVE", "inconclusive"),
}
_DASH = "\u2013"  # en dash: "no value" in a cell

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em;max-width:1400px;
color:#1b1b1b;line-height:1.4}
h1{margin:.2em 0}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{margin:1.1em 0 .3em}
.badge{display:inline-block;font-size:1.6em;font-weight:700;padding:.25em .8em;border-radius:.3em;
letter-spacing:.05em;margin:.3em 0}
.badge.pass{background:#1a7f37;color:#fff}.badge.fail{background:#c62828;color:#fff}
.badge.inconclusive{background:#f2b600;color:#1b1b1b}
.sub{color:#444;margin:.15em 0}.links a{margin-right:1.2em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.92em}
td,th{border:1px solid #d0d0d0;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f4f4f4}td.l,th.l{text-align:left}
tr.fail td{background:#fdecea}tr.inconclusive td{background:#fff6dc}
td.evidence{text-align:left;color:#444;font-size:.92em;border-top:none}
tr.main td{border-bottom:none}
.v-pass{color:#1a7f37;font-weight:700}.v-fail{color:#c62828;font-weight:700}
.v-inconclusive{color:#9a6b00;font-weight:700}.v-skipped{color:#777}
.worse{color:#c62828}.better{color:#1a7f37}
small,.note{color:#666}.note{font-size:.9em}
pre{white-space:pre-wrap;word-break:break-word;margin:0;max-width:38em;font-size:.88em;text-align:left}
details{margin:.3em 0}summary{cursor:pointer}
svg{max-width:100%;height:auto}
tr.all td{font-weight:600;background:#fafafa}
"""


# ------------------------------------------------------------------------------------------ accumulate


@dataclass(slots=True)
class _Sums:
    """Running sums of one score over a set of items: the candidate on all of them, and both sides
    on the items the champion also scored (the only fair comparison)."""

    n: int = 0
    cand: float = 0.0
    paired: int = 0
    cand_paired: float = 0.0
    champ_paired: float = 0.0

    def add(self, score: float, champion: float | None) -> None:
        self.n += 1
        self.cand += score
        if champion is not None:
            self.paired += 1
            self.cand_paired += score
            self.champ_paired += champion

    @property
    def cand_mean(self) -> float | None:
        return self.cand / self.n if self.n else None

    @property
    def champ_mean(self) -> float | None:
        return self.champ_paired / self.paired if self.paired else None

    @property
    def delta(self) -> float | None:
        """Candidate minus champion, both on the paired items."""
        return (self.cand_paired - self.champ_paired) / self.paired if self.paired else None


@dataclass(slots=True)
class _Example:
    seq: int
    item_id: str
    tags: tuple[str, ...]
    candidate: float
    champion: float
    output: str
    reference: str
    loss: bool


@dataclass(slots=True)
class _Metric:
    evalset: str
    direction: Direction
    overall: _Sums = field(default_factory=_Sums)
    by_tag: dict[str, _Sums] = field(default_factory=dict)
    wins: int = 0
    losses: int = 0
    examples: list[_Example] = field(default_factory=list)
    kept_wins: int = 0


@dataclass(slots=True)
class _Evalset:
    items: int = 0
    prompt_tokens: float = 0.0
    prompt_n: int = 0
    guard_checked: int = 0
    guard_flagged: int = 0
    latency: array = field(default_factory=lambda: array("d"))
    ttft: array = field(default_factory=lambda: array("d"))
    output_tokens: array = field(default_factory=lambda: array("d"))


def _number(value: Any) -> float | None:
    """A finite float, or None for anything else (None, NaN, text)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        v = float(value)
        return v if math.isfinite(v) else None
    return None


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    """Model output or reference as display text, cut to ``limit`` characters."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + f"\u2026 [{len(text) - limit:,} more characters]"


def default_direction(metric: str) -> Direction:
    """Without a catalogue: the guard's built-in per-item scores are lower-is-better, others higher."""
    scorer = metric.split(".", 1)[-1]
    return "lower" if scorer.startswith("guard_") else "higher"


class ReleaseReportBuilder:
    """Accumulates what the report needs from a stream of per-item records, in bounded memory.

    A release can have 100k items, so items are not held: running sums per (metric, tag) and per
    evalset, at most ``max_examples`` disagreement examples per metric (losses are kept before
    wins: a regression is what a reviewer must read), and one float per item for each of the
    latency, time-to-first-token and output-length distributions.

    ``champion_items``: ``{metric: {item id: score}}`` of the champion, None when there is none.
    ``row_tags``: ``{(evalset, item id): tags}`` from the evalset rows. ``directions``: which way
    is better per metric (``{name: d.direction for name, d in catalogue.items()}``); without it the
    guard's scores are lower-is-better and everything else higher, which decides what a win is.
    """

    def __init__(
        self,
        *,
        champion_items: Mapping[str, Mapping[str, float]] | None,
        row_tags: Mapping[tuple[str, str], Sequence[str]] | None = None,
        max_examples: int = 25,
        directions: Mapping[str, Direction] | None = None,
    ) -> None:
        self._champion = champion_items
        self._row_tags = row_tags or {}
        self._max_examples = max(0, max_examples)
        self._directions = directions or {}
        self._metrics: dict[str, _Metric] = {}
        self._evalsets: dict[str, _Evalset] = {}
        self._seq = 0

    @property
    def has_champion(self) -> bool:
        return self._champion is not None

    def add(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Fold a chunk of records (one per item, in any order) into the sums."""
        for record in records:
            self._add(record)

    def _add(self, record: Mapping[str, Any]) -> None:
        evalset = str(record.get("evalset") or "")
        item_id = str(record.get("id") or "")
        tags = tuple(self._row_tags.get((evalset, item_id)) or record.get("tags") or ())
        es = self._evalsets.get(evalset)
        if es is None:
            es = self._evalsets[evalset] = _Evalset()
        es.items += 1
        if (v := _number(record.get("prompt_tokens"))) is not None:
            es.prompt_tokens += v
            es.prompt_n += 1
        for key, arr in (("latency_s", es.latency), ("ttft_s", es.ttft), ("output_tokens", es.output_tokens)):
            if (v := _number(record.get(key))) is not None:
                arr.append(v)
        labels = [record.get(f"guard_{check}") for check in GUARD_CHECKS]
        if any(isinstance(label, str) for label in labels):
            es.guard_checked += 1
            es.guard_flagged += any(isinstance(label, str) and label != "safe" for label in labels)
        for key, value in record.items():
            if key in NON_SCORE_FIELDS or key.startswith("guard_"):
                continue
            if (score := _number(value)) is not None:
                self._score(f"{evalset}.{key}", evalset, item_id, tags, score, record)
        for check, label in zip(GUARD_CHECKS, labels, strict=True):
            if isinstance(label, str):
                unsafe = 0.0 if label == "safe" else 1.0
                self._score(f"{evalset}.guard_{check}_unsafe", evalset, item_id, tags, unsafe, record)

    def _score(
        self,
        metric: str,
        evalset: str,
        item_id: str,
        tags: tuple[str, ...],
        score: float,
        record: Mapping[str, Any],
    ) -> None:
        m = self._metrics.get(metric)
        if m is None:
            direction = self._directions.get(metric) or default_direction(metric)
            m = self._metrics[metric] = _Metric(evalset, direction)
        champion = None
        if self._champion is not None and (column := self._champion.get(metric)) is not None:
            champion = _number(column.get(item_id))
        m.overall.add(score, champion)
        for tag in tags or (UNTAGGED,):
            sums = m.by_tag.get(tag)
            if sums is None:
                sums = m.by_tag[tag] = _Sums()
            sums.add(score, champion)
        if champion is None or abs(score - champion) <= _EPS:
            return
        loss = score < champion if m.direction == "higher" else score > champion
        if loss:
            m.losses += 1
        else:
            m.wins += 1
        cap = self._max_examples
        if len(m.examples) >= cap:
            if not loss or m.kept_wins == 0:
                return
            # Full: a loss takes the place of the latest win kept.
            for n in range(len(m.examples) - 1, -1, -1):
                if not m.examples[n].loss:
                    del m.examples[n]
                    m.kept_wins -= 1
                    break
        self._seq += 1
        m.examples.append(
            _Example(
                self._seq,
                item_id,
                tags,
                score,
                champion,
                _text(record.get("output")),
                _text(record.get("reference")),
                loss,
            )
        )
        m.kept_wins += not loss

    # -------------------------------------------------------------------------------------- render

    def html(
        self,
        *,
        title: str,
        gate_report: Mapping[str, Any],
        subtitle_lines: Sequence[str] = (),
        links: Sequence[tuple[str, str]] = (),
    ) -> str:
        """The whole page: verdict, gates, per-evalset and per-tag scores, disagreements, plots."""
        gated = {g.get("metric") for g in gate_report.get("gates") or []}
        parts = [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width,initial-scale=1'>",
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
            _header(title, gate_report, subtitle_lines, links),
            _gates_section(gate_report),
            self._evalsets_section(),
            self._tags_section(gated),
            self._disagreements_section(),
            self._plots_section(gate_report),
            "</body></html>",
        ]
        return "".join(parts)

    def _evalsets_section(self) -> str:
        out = ["<h2>Evalsets</h2>"]
        if not self._evalsets:
            return out[0] + "<p class='note'>No items were recorded.</p>"
        champion_note = (
            "champion on the same items" if self.has_champion else "no champion: nothing to compare with"
        )
        out.append(
            "<table><tr><th class='l'>evalset</th><th>items</th><th class='l'>scores: candidate "
            f"<small>(champion, delta; {champion_note})</small></th><th>prompt tokens<br><small>mean</small>"
            "</th><th>output tokens<br><small>mean / p95</small></th><th>latency s<br><small>p50 / p95"
            "</small></th><th>TTFT s<br><small>p50 / p95</small></th><th>guard flagged</th></tr>"
        )
        for name, es in sorted(self._evalsets.items()):
            scores = []
            for metric, m in sorted(self._metrics.items()):
                if m.evalset != name:
                    continue
                s = m.overall
                line = f"{_e(metric.split('.', 1)[1])} <b>{_f(s.cand_mean)}</b>"
                if s.paired:
                    line += f" <small>({_f(s.champ_mean)}, {_delta_html(s.delta, m.direction)})</small>"
                scores.append(line)
            flagged = f"{es.guard_flagged} of {es.guard_checked}" if es.guard_checked else _DASH
            out.append(
                f"<tr><td class='l'>{_e(name)}</td><td>{es.items:,}</td>"
                f"<td class='l'>{'<br>'.join(scores) or _DASH}</td>"
                f"<td>{_f(es.prompt_tokens / es.prompt_n if es.prompt_n else None, '.0f')}</td>"
                f"<td>{_pair(_mean(es.output_tokens), _quantile(es.output_tokens, 0.95), '.0f')}</td>"
                f"<td>{_pair(_quantile(es.latency, 0.5), _quantile(es.latency, 0.95), '.3f')}</td>"
                f"<td>{_pair(_quantile(es.ttft, 0.5), _quantile(es.ttft, 0.95), '.3f')}</td>"
                f"<td>{flagged}</td></tr>"
            )
        out.append("</table>")
        return "".join(out)

    def _tags_section(self, gated: set[Any]) -> str:
        out = [
            "<h2>Scores by tag</h2><p class='note'>Per metric and evalset tag: the candidate's mean, the "
            "champion's mean on the same items and the difference (candidate &minus; champion on the "
            f"items both scored), worst first; at most {MAX_TAG_ROWS} tags per metric. An item counts "
            "under each of its tags. Tags with few items move by whole items: read n first.</p>"
        ]
        if not self._metrics:
            return out[0]
        for metric, m in sorted(self._metrics.items()):
            tags = [(t, s) for t, s in m.by_tag.items() if t != UNTAGGED or len(m.by_tag) > 1]
            moved = any(s.delta is not None and abs(s.delta) > _EPS for _, s in tags) or bool(m.losses)
            s = m.overall
            summary = f"<b>{_e(metric)}</b> &mdash; candidate {_f(s.cand_mean)}"
            if s.paired:
                summary += f", champion {_f(s.champ_mean)}, delta {_delta_html(s.delta, m.direction)}"
            if m.direction == "lower":
                summary += " <small>(lower is better)</small>"
            if metric in gated:
                summary += " <small>[gated]</small>"
            opened = " open" if moved else ""
            out.append(f"<details{opened}><summary>{summary}</summary>")
            tags.sort(key=lambda ts: _badness_key(ts[0], ts[1], m.direction))
            shown = tags[:MAX_TAG_ROWS]
            out.append(
                "<table><tr><th class='l'>tag</th><th>n</th><th>candidate</th><th>champion</th>"
                "<th>delta</th></tr>"
            )
            out.append(_tag_row("all items", m.overall, m.direction, "all"))
            out += [_tag_row(tag, s, m.direction) for tag, s in shown]
            out.append("</table>")
            if not tags:
                out.append("<p class='note'>The evalset rows have no tags.</p>")
            if len(tags) > len(shown):
                rest = [s.delta for _, s in tags[len(shown) :] if s.delta is not None]
                spread = (
                    f" (deltas {_f(min(rest), signed=True)} to {_f(max(rest), signed=True)})" if rest else ""
                )
                out.append(f"<p class='note'>{len(tags) - len(shown)} more tags not shown{spread}.</p>")
            out.append("</details>")
        return "".join(out)

    def _disagreements_section(self) -> str:
        out = ["<h2>Items where candidate and champion disagree</h2>"]
        if not self.has_champion:
            return out[0] + "<p class='note'>No champion: nothing to disagree with.</p>"
        quiet = []
        for metric, m in sorted(self._metrics.items()):
            if not m.overall.paired:
                quiet.append(f"{metric} (champion has no scores for it)")
                continue
            total = m.wins + m.losses
            if not total:
                quiet.append(metric)
                continue
            examples = sorted(m.examples, key=lambda ex: (not ex.loss, ex.seq))
            out.append(
                f"<h3>{_e(metric)}</h3><p>{total:,} of {m.overall.paired:,} paired items differ: "
                f"the candidate is <span class='better'>better on {m.wins:,}</span>, "
                f"<span class='worse'>worse on {m.losses:,}</span>"
                f" <small>({m.direction} is better)</small>."
                + (
                    f" <span class='note'>Showing {len(examples)} (losses first).</span>"
                    if len(examples) < total
                    else ""
                )
                + "</p>"
            )
            if not examples:
                continue
            out.append(
                "<table><tr><th class='l'>item</th><th class='l'>tags</th><th>candidate</th>"
                "<th>champion</th><th class='l'>candidate output</th><th class='l'>reference</th></tr>"
            )
            for ex in examples:
                cls = "worse" if ex.loss else "better"
                out.append(
                    f"<tr><td class='l'>{_e(ex.item_id)}</td><td class='l'>{_e(', '.join(ex.tags)) or _DASH}"
                    f"</td><td class='{cls}'>{_f(ex.candidate)}</td><td>{_f(ex.champion)}</td>"
                    f"<td class='l'><pre>{_e(ex.output)}</pre></td>"
                    f"<td class='l'><pre>{_e(ex.reference) or _DASH}</pre></td></tr>"
                )
            out.append("</table>")
        if quiet:
            out.append("<p class='note'>No disagreement on: " + ", ".join(_e(q) for q in quiet) + ".</p>")
        return "".join(out)

    def _plots_section(self, gate_report: Mapping[str, Any]) -> str:
        plots = self._plots(gate_report)
        if not plots:
            return ""
        return "<h2>Plots</h2>" + "".join(f"<h3>{_e(heading)}</h3><div>{svg}</div>" for heading, svg in plots)

    def _plots(self, gate_report: Mapping[str, Any]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self._metrics:
            out.append(("Mean score per metric", _scores_plot(self._metrics, gate_report)))
        forest = _comparison_plot(gate_report)
        if forest:
            out.append(("Comparison gates: candidate \u2212 champion with the gate interval", forest))
        latency = {n: es.latency for n, es in sorted(self._evalsets.items()) if es.latency}
        ttft = {n: es.ttft for n, es in sorted(self._evalsets.items()) if es.ttft}
        if latency or ttft:
            out.append(
                (
                    "Latency per item",
                    _histograms([("latency (s)", latency), ("time to first token (s)", ttft)]),
                )
            )
        tokens = {n: es.output_tokens for n, es in sorted(self._evalsets.items()) if es.output_tokens}
        if tokens:
            out.append(("Output length per item", _histograms([("output tokens", tokens)])))
        return out


# ---------------------------------------------------------------------------------------- header


def _header(
    title: str,
    report: Mapping[str, Any],
    subtitle_lines: Sequence[str],
    links: Sequence[tuple[str, str]],
) -> str:
    decision = report.get("decision") or ("pass" if report.get("passed") else "fail")
    label, word = _BADGE.get(decision, (str(decision).upper(), str(decision)))
    gates = report.get("gates") or []
    counts: dict[str, int] = {}
    for g in gates:
        counts[g.get("verdict", "")] = counts.get(g.get("verdict", ""), 0) + 1
    tally = ", ".join(
        f"{counts[v]} {v}" for v in ("pass", "fail", "inconclusive", "skipped") if counts.get(v)
    )
    cls = decision if decision in _BADGE else "fail"
    out = [
        f"<h1>{_e(title)}</h1>",
        f"<div class='badge {cls}' role='status' aria-label='release gates {_e(word)}'>{_e(label)}</div>",
        f"<p class='sub'>Gates {_e(word)}" + (f": {len(gates)} gates, {tally}." if gates else ".") + "</p>",
    ]
    if decision == "inconclusive":
        out.append(
            "<p class='sub'>Nothing failed, but some evalset is too small to tell: an inconclusive "
            "release is never promoted.</p>"
        )
    out += [f"<p class='sub'>{_e(line)}</p>" for line in subtitle_lines]
    if links:
        out.append(
            "<p class='links'>"
            + " ".join(
                f"<a href='{_e(href)}'>{_e(label)}</a>" if _safe_href(href) else _e(f"{label}: {href}")
                for label, href in links
            )
            + "</p>"
        )
    return "".join(out)


def _safe_href(href: str) -> bool:
    """Relative paths and web links only: no ``javascript:``/``data:`` URL ever becomes a link."""
    scheme = re.match(r"^\s*([A-Za-z][A-Za-z0-9+.-]*):", href)
    return scheme is None or scheme.group(1).lower() in {"http", "https"}


# ----------------------------------------------------------------------------------------- gates


def _gates_section(
    report: Mapping[str, Any], *, candidate: str = "candidate", reference: str = "champion"
) -> str:
    gates = report.get("gates") or []
    stats = report.get("statistics") or {}
    conf = stats.get("confidence", 0.95)
    holm = stats.get("family_size", 0) > 1 and stats.get("correction") == "holm"
    out = ["<h2>Gates</h2>"]
    if not gates:
        return out[0] + "<p class='note'>No gates.</p>"
    out.append(
        "<table><tr><th class='l'>gate<br><small>metric</small></th><th class='l'>verdict</th>"
        f"<th>{_e(candidate)}</th><th>{_e(reference)}</th><th>delta</th>"
        f"<th>interval<br><small>{2 * conf - 1:.0%} two-sided; bound</small></th><th class='l'>rule</th>"
        f"<th>p{'<br><small>Holm-adjusted</small>' if holm else ''}</th>"
        "<th>MDE<br><small>items needed</small></th></tr>"
    )
    for g in gates:
        verdict = str(g.get("verdict", ""))
        comparison = g.get("kind") == "non_inferiority"
        interval = _DASH
        if g.get("ci_low") is not None and g.get("ci_high") is not None:
            interval = f"[{_f(g['ci_low'], signed=comparison)}, {_f(g['ci_high'], signed=comparison)}]"
            if g.get("bound") is not None:
                interval += f"<br><small>bound {_f(g['bound'], signed=comparison)}"
                adjusted = g.get("bound_adjusted")
                if comparison and holm and adjusted is not None and abs(adjusted - g["bound"]) > _EPS:
                    interval += f"; Holm {_f(adjusted, signed=True)}"
                interval += "</small>"
        rule = _e(g.get("threshold") or _DASH)
        if g.get("method"):
            rule += f"<br><small>{_e(g['method'])}</small>"
        p = _p(g.get("p_adjusted") if g.get("p_adjusted") is not None else g.get("p_value"))
        if g.get("p_adjusted") is not None and g.get("p_value") is not None and holm:
            p += f"<br><small>raw {_p(g['p_value'])}</small>"
        mde = _f(g.get("mde"))
        if g.get("items_needed"):
            mde += f"<br><small>~{g['items_needed']:,} items</small>"
        n = f"<br><small>n {g['n']:,}</small>" if g.get("n") is not None else ""
        row_cls = verdict if verdict in ("fail", "inconclusive") else ""
        out.append(
            f"<tr class='main {row_cls}'><td class='l'><b>{_e(g.get('name', ''))}</b><br>"
            f"<small>{_e(g.get('metric', ''))} &middot; {_e(g.get('kind', ''))}</small></td>"
            f"<td class='l v-{_e(verdict)}'>{_e(verdict.upper())}</td>"
            f"<td>{_f(g.get('value'))}{n}</td><td>{_f(g.get('champion_value'))}</td>"
            f"<td>{_f(g.get('delta'), signed=True)}</td><td>{interval}</td><td class='l'>{rule}</td>"
            f"<td>{p}</td><td>{mde}</td></tr>"
            f"<tr class='{row_cls}'><td class='evidence' colspan='9'>{_e(g.get('evidence') or '')}</td></tr>"
        )
    out.append("</table>")
    out.append(f"<p class='note'>{_e(_statistics_line(stats, report))}</p>")
    return "".join(out)


def _statistics_line(stats: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    parts = []
    if stats:
        conf = stats.get("confidence", 0.95)
        parts.append(f"bounds are one-sided {conf:.0%}, intervals two-sided {2 * conf - 1:.0%}")
        family = stats.get("family_size", 0)
        if family > 1 and stats.get("correction") == "holm":
            parts.append(
                f"Holm correction across {family} comparison gates (any false pass <= {1 - conf:.0%})"
            )
        elif stats.get("correction"):
            parts.append(f"correction: {stats['correction']} (family of {family})")
        parts.append(f"MDE at {stats.get('power', 0.8):.0%} power")
        if stats.get("resamples"):
            parts.append(f"bootstrap {stats['resamples']:,} resamples (seed {stats.get('seed')})")
        if stats.get("sequential"):
            parts.append(f"sequential monitoring ({stats.get('sequential_method')})")
    if report.get("champion_version"):
        parts.append(f"champion v{report['champion_version']}")
    if report.get("champion_scores"):
        parts.append(f"champion scores: {report['champion_scores']}")
    parts.append("INCONCLUSIVE: nothing failed, but too few items to tell; never promotes")
    return "Statistics: " + "; ".join(parts) + "."


# ------------------------------------------------------------------------------------------ cells


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _f(value: Any, fmt: str = ".3f", *, signed: bool = False) -> str:
    v = _number(value)
    if v is None:
        return _DASH
    return f"{v:+{fmt}}" if signed else f"{v:{fmt}}"


def _p(value: Any) -> str:
    v = _number(value)
    if v is None:
        return _DASH
    return f"{v:.2g}" if v >= 0.01 else f"{v:.1e}"


def _pair(a: float | None, b: float | None, fmt: str) -> str:
    return _DASH if a is None else f"{_f(a, fmt)} / {_f(b, fmt)}"


def _delta_html(delta: float | None, direction: Direction) -> str:
    if delta is None:
        return _DASH
    worse = delta < -_EPS if direction == "higher" else delta > _EPS
    better = delta > _EPS if direction == "higher" else delta < -_EPS
    cls = " class='worse'" if worse else " class='better'" if better else ""
    return f"<span{cls}>{_f(delta, signed=True)}</span>"


def _badness_key(tag: str, s: _Sums, direction: Direction) -> tuple[int, float, int, str]:
    """Worst first: by delta (ascending for higher-is-better); without a champion, by the
    candidate's own mean; ties by the larger tag first, then by name."""
    value = s.delta if s.delta is not None else s.cand_mean
    if value is None:
        return (2, 0.0, -s.n, tag)
    return (0 if s.delta is not None else 1, value if direction == "higher" else -value, -s.n, tag)


def _tag_row(tag: str, s: _Sums, direction: Direction, cls: str = "") -> str:
    champion = _f(s.champ_mean)
    if s.paired and s.paired != s.n:
        champion += f" <small>(n {s.paired:,})</small>"
    return (
        f"<tr class='{cls}'><td class='l'>{_e(tag)}</td><td>{s.n:,}</td><td>{_f(s.cand_mean)}</td>"
        f"<td>{champion}</td><td>{_delta_html(s.delta, direction)}</td></tr>"
    )


def _mean(values: array) -> float | None:
    return sum(values) / len(values) if values else None


def _quantile(values: array, q: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return float(np.quantile(np.frombuffer(values, dtype=float), q))


# ------------------------------------------------------------------------------------------ plots


def _svg(fig: Any, label: str) -> str:
    """A figure as inline SVG with the same bytes for the same figure: fixed id salt, no metadata
    (which would hold a date and the matplotlib version), no XML prolog."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "llmrelease-release-report", "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, count=1, flags=re.S)
    return text.replace("<svg ", f"<svg role='img' aria-label='{_e(label)}' ", 1)


def _figure(width: float, height: float) -> Any:
    """A figure without pyplot: no GUI backend is touched and nothing global needs closing."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _scores_plot(metrics: Mapping[str, _Metric], report: Mapping[str, Any]) -> str:
    """Horizontal bars, candidate against champion (on the same items), with an absolute gate's
    interval on the candidate's bar where the gate decided on a bound."""
    names = sorted(metrics)[:MAX_PLOTTED_METRICS]
    intervals: dict[str, tuple[float, float]] = {}
    for g in report.get("gates") or []:
        if (
            g.get("kind") != "non_inferiority"
            and g.get("ci_low") is not None
            and g.get("ci_high") is not None
        ):
            intervals.setdefault(g.get("metric"), (float(g["ci_low"]), float(g["ci_high"])))
    fig = _figure(9, 0.9 + 0.42 * len(names))
    ax = fig.subplots()
    ys = list(range(len(names)))[::-1]
    cand = [metrics[n].overall.cand_mean or 0.0 for n in names]
    champ = [metrics[n].overall.champ_mean for n in names]
    has_champ = any(c is not None for c in champ)
    h = 0.38 if has_champ else 0.6
    ax.barh(
        [y + (h / 2 if has_champ else 0) for y in ys], cand, h, color=_COLORS["candidate"], label="candidate"
    )
    if has_champ:
        ax.barh(
            [y - h / 2 for y in ys], [c or 0.0 for c in champ], h, color=_COLORS["champion"], label="champion"
        )
    for y, name, value, other in zip(ys, names, cand, champ, strict=True):
        ax.annotate(
            f"{value:.3f}",
            (value, y + (h / 2 if has_champ else 0)),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize="x-small",
        )
        if other is not None:
            ax.annotate(
                f"{other:.3f}",
                (other, y - h / 2),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize="x-small",
                color="#444",
            )
        if name in intervals:
            lo, hi = intervals[name]
            ax.errorbar(
                value,
                y + (h / 2 if has_champ else 0),
                xerr=[[max(0.0, value - lo)], [max(0.0, hi - value)]],
                fmt="none",
                ecolor="#222",
                capsize=3,
                lw=1.2,
            )
    ax.set_yticks(ys, names)
    ax.set_xlabel("mean score (error bar: the gate's interval)" if intervals else "mean score")
    top = max([*cand, *(c for c in champ if c is not None), *(hi for _, hi in intervals.values()), 1.0])
    ax.set_xlim(0, top * 1.1)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _svg(fig, "mean score per metric, candidate and champion")


def _comparison_plot(report: Mapping[str, Any]) -> str | None:
    """Each comparison gate's delta with its interval, the margin it must clear and zero."""
    rows = [
        g
        for g in report.get("gates") or []
        if g.get("kind") == "non_inferiority" and g.get("delta") is not None and g.get("ci_low") is not None
    ]
    if not rows:
        return None
    fig = _figure(9, 1.0 + 0.55 * len(rows))
    ax = fig.subplots()
    verdict_color = {"pass": "#1a7f37", "fail": "#c62828", "inconclusive": "#b07800"}
    for y, g in zip(range(len(rows))[::-1], rows, strict=True):
        color = verdict_color.get(g.get("verdict"), "#555")
        ax.plot([g["ci_low"], g["ci_high"]], [y, y], color=color, lw=2.5)
        ax.plot([g["delta"]], [y], "o", color=color)
        margin = re.match(r"^\s*(drop|rise)\s*<=\s*([0-9.eE+-]+)", str(g.get("threshold") or ""))
        if margin:
            m = float(margin.group(2)) * (-1 if margin.group(1) == "drop" else 1)
            ax.plot([m, m], [y - 0.35, y + 0.35], color="#c62828", ls="--", lw=1.2)
    ax.axvline(0, color="#888", lw=0.8)
    ax.set_yticks(list(range(len(rows)))[::-1], [f"{g.get('name')} ({g.get('verdict')})" for g in rows])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("candidate \u2212 champion (dashed red: the margin)")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig, "comparison gates: delta and interval against the margin")


def _histograms(panels: Sequence[tuple[str, Mapping[str, array]]]) -> str:
    """One histogram panel per quantity, the evalsets stacked (the bars' height is all items), p50
    and p95 of all items marked. Integer data with a small range gets one bar per value."""
    import numpy as np

    panels = [(label, series) for label, series in panels if series]
    fig = _figure(6.2 * len(panels), 3.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, series) in zip(axes, panels, strict=True):
        values = {name: np.frombuffer(arr, dtype=float) for name, arr in series.items()}
        everything = np.concatenate(list(values.values()))
        lo, hi = float(everything.min()), float(everything.max())
        if np.all(everything == np.round(everything)) and hi - lo <= 60:
            bins = np.arange(lo - 0.5, hi + 1.5)
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
        ax.hist(
            list(values.values()),
            bins=bins,
            stacked=True,
            label=[f"{name} (n {v.size:,})" for name, v in values.items()],
            color=[_EVALSET_COLORS[n % len(_EVALSET_COLORS)] for n in range(len(values))],
        )
        for q, style in ((0.5, "-"), (0.95, "--")):
            x = float(np.quantile(everything, q))
            ax.axvline(x, color="#222", ls=style, lw=1, label=f"p{int(q * 100)} {x:.4g}")
        ax.set_xlabel(label)
        ax.set_ylabel("items")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _svg(fig, ", ".join(label for label, _ in panels) + " histograms")
