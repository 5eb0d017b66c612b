"""The release report page: numbers a reviewer relies on (per-tag means and deltas, win/loss counts),
escaping of model text, no external resource, the same bytes for the same inputs, bounded memory,
and the verdict badge. Pure: small records built here, no server, no MLflow."""

from __future__ import annotations

import re
import tracemalloc
from html.parser import HTMLParser
from typing import Any

from llmrelease.tasks.reporting.release_html import ReleaseReportBuilder

DASH = "\u2013"


class _Tables(HTMLParser):
    """Every table row of a page as the texts of its cells (entities decoded)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def rows(page: str) -> list[list[str]]:
    parser = _Tables()
    parser.feed(page)
    return parser.rows


def text(page: str) -> str:
    """The page's visible text, one space between words (tags dropped, entities kept)."""
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


def gate(**over: Any) -> dict[str, Any]:
    row = {
        "name": "accuracy-vs-champion",
        "metric": "tickets.acc",
        "kind": "non_inferiority",
        "value": 0.5,
        "threshold": "drop <= 0.05 vs champion",
        "verdict": "pass",
        "evidence": "paired on 4 items: delta +0.0000",
        "champion_value": 0.5,
        "delta": 0.0,
        "ci_low": -0.25,
        "ci_high": 0.25,
        "n": 4,
        "bound": -0.2,
        "bound_adjusted": -0.24,
        "p_value": 0.04,
        "p_adjusted": 0.08,
        "mde": 0.4,
        "items_needed": 604,
        "method": "expanded percentile bootstrap",
        "reason": "",
        "on": "value",
    }
    return {**row, **over}


def report(decision: str = "pass", gates: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "passed": decision == "pass",
        "decision": decision,
        "champion_version": "1",
        "statistics": {"confidence": 0.95, "correction": "holm", "power": 0.8, "family_size": 2},
        "gates": [gate()] if gates is None else gates,
        "champion_scores": "reused from run abc",
    }


def record(item_id: str, acc: float | None, **extra: Any) -> dict[str, Any]:
    return {
        "evalset": "tickets",
        "id": item_id,
        "output": f'{{"category": "billing", "item": "{item_id}"}}',
        "reference": '{"category": "billing"}',
        "prompt_tokens": 300,
        "output_tokens": 14,
        "latency_s": 0.5,
        "ttft_s": 0.1,
        "acc": acc,
        **extra,
    }


# Four items, two tags (t4 has both). Candidate 1,0,1,0; champion 1,1,0,0.
#   tag a (t1 t2 t4): candidate 1/3, champion 2/3, delta -1/3
#   tag b (t3 t4):    candidate 1/2, champion 0,   delta +1/2
#   all items:        candidate 1/2, champion 1/2, delta 0; t2 is a loss, t3 a win.
TAGS = {
    ("tickets", "t1"): ["a"],
    ("tickets", "t2"): ["a"],
    ("tickets", "t3"): ["b"],
    ("tickets", "t4"): ["a", "b"],
}
CANDIDATE = {"t1": 1.0, "t2": 0.0, "t3": 1.0, "t4": 0.0}
CHAMPION = {"tickets.acc": {"t1": 1.0, "t2": 1.0, "t3": 0.0, "t4": 0.0}}


def four_items(champion: dict[str, dict[str, float]] | None = CHAMPION, **kw: Any) -> ReleaseReportBuilder:
    builder = ReleaseReportBuilder(champion_items=champion, row_tags=TAGS, **kw)
    builder.add([record("t1", 1.0), record("t2", 0.0)])  # two chunks, as a release streams them
    builder.add([record("t3", 1.0), record("t4", 0.0)])
    return builder


def test_per_tag_breakdown_has_the_hand_computed_means_and_deltas_worst_first() -> None:
    page = four_items().html(title="app", gate_report=report())
    table = rows(page)
    a = ["a", "3", "0.333", "0.667", "-0.333"]
    b = ["b", "2", "0.500", "0.000", "+0.500"]
    assert a in table and b in table
    assert table.index(a) < table.index(b)  # the regression first
    assert ["all items", "4", "0.500", "0.500", "+0.000"] in table


def test_disagreements_count_wins_and_losses_and_show_both_items() -> None:
    page = four_items().html(title="app", gate_report=report())
    assert "2 of 4 paired items differ: the candidate is better on 1 , worse on 1" in text(page)
    table = rows(page)
    loss = next(r for r in table if r[0] == "t2")
    win = next(r for r in table if r[0] == "t3")
    assert loss[:4] == ["t2", "a", "0.000", "1.000"]
    assert win[:4] == ["t3", "b", "1.000", "0.000"]
    assert table.index(loss) < table.index(win)  # losses first
    assert not any(r[0] in ("t1", "t4") for r in table)  # agreeing items are not examples


def test_examples_are_capped_but_counts_are_not_and_losses_are_kept_first() -> None:
    cand = [1.0] * 5 + [0.0] * 3 + [1.0] * 2  # items 0-4 win, 5-7 lose, 8-9 agree
    champ = {f"i{n}": v for n, v in enumerate([0.0] * 5 + [1.0] * 3 + [1.0] * 2)}
    builder = ReleaseReportBuilder(champion_items={"tickets.acc": champ}, max_examples=4)
    builder.add(record(f"i{n}", v) for n, v in enumerate(cand))
    page = builder.html(title="app", gate_report=report())
    assert "8 of 10 paired items differ: the candidate is better on 5 , worse on 3" in text(page)
    assert "Showing 4 (losses first)" in page
    shown = [r[0] for r in rows(page) if re.fullmatch(r"i\d", r[0])]
    assert shown == ["i5", "i6", "i7", "i0"]


def test_guard_labels_become_lower_is_better_scores() -> None:
    champion = {"tickets.guard_response_unsafe": {"t1": 0.0, "t2": 1.0}}
    builder = ReleaseReportBuilder(champion_items=champion)
    builder.add(
        [
            record(
                "t1", 1.0, guard_prompt="safe", guard_response="unsafe:S1", guard_response_raw="unsafe\nS1"
            ),
            record("t2", 1.0, guard_prompt="safe", guard_response="safe", guard_response_raw="safe"),
        ]
    )
    page = builder.html(title="app", gate_report=report())
    words = text(page)
    # t1 turned unsafe (a loss), t2 turned safe (a win): lower is better for the guard.
    assert "tickets.guard_response_unsafe 2 of 2 paired items differ: the candidate is better on 1" in words
    assert next(r for r in rows(page) if r[0] == "t1")[2:4] == ["1.000", "0.000"]
    assert "tickets.guard_response_raw" not in page and "tickets.guard_prompt " not in words
    evalset_row = next(r for r in rows(page) if r[:1] == ["tickets"])
    assert evalset_row[:2] == ["tickets", "2"]
    assert evalset_row[-1] == "1 of 2"  # items the guard flagged


def test_none_scores_are_skipped() -> None:
    builder = ReleaseReportBuilder(champion_items=None)
    builder.add([record("t1", 1.0), record("t2", None), record("t3", 0.0)])
    page = builder.html(title="app", gate_report=report())
    assert ["all items", "2", "0.500", DASH, DASH] in rows(page)


def test_model_text_is_escaped() -> None:
    evil = "<script>alert('x')</script><img src=x onerror=alert(1)>"
    builder = ReleaseReportBuilder(
        champion_items={"tickets.acc": {"t1": 1.0}}, row_tags={("tickets", "t1"): ["<b>tag</b>"]}
    )
    builder.add([record("t1", 0.0, output=evil, reference=evil)])
    page = builder.html(
        title="<script>t</script>",
        gate_report=report(gates=[gate(name="<script>g</script>", evidence=evil)]),
        subtitle_lines=[evil],
        links=[("<i>x</i>", "javascript:alert(1)"), ("gates", "gate_report.json")],
    )
    assert "<script" not in page.lower()
    assert "<img" not in page and "<b>tag</b>" not in page and "<i>x</i>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "href='javascript" not in page and "href='gate_report.json'" in page


def test_the_page_loads_nothing_from_elsewhere() -> None:
    page = four_items().html(
        title="app", gate_report=report(), links=[("gates", "gate_report.json"), ("items", "eval/items.json")]
    )
    assert "<svg" in page  # the plots are there, inline
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", page, re.I)
    assert not re.search(r"<script|<link|<iframe|<img|@import|url\((?!#)", page, re.I)


def test_the_same_inputs_render_the_same_bytes() -> None:
    first = four_items().html(title="app", gate_report=report(), subtitle_lines=["v3"])
    second = four_items().html(title="app", gate_report=report(), subtitle_lines=["v3"])
    assert first == second
    assert "<dc:date>" not in first and "<metadata>" not in first
    assert first.count("<svg") >= 3  # scores, comparison gate, latency and length


def test_memory_is_bounded_for_100k_items() -> None:
    n_items, cap = 100_000, 5
    champion = {"tickets.acc": {f"i{n}": float(n % 2) for n in range(n_items)}}
    builder = ReleaseReportBuilder(champion_items=champion, max_examples=cap)
    long_output = "x" * 2_000  # 200 MB if every output were kept

    def stream() -> Any:
        for n in range(n_items):
            yield record(f"i{n}", float(n % 3 == 0), output=long_output)

    tracemalloc.start()
    try:
        builder.add(stream())
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 16 * 1024 * 1024  # three floats per item and the sums: a few MB
    page = builder.html(title="app", gate_report=report())
    # Candidate 1 when n % 3 == 0, champion 1 when n is odd: they differ where exactly one holds.
    wins = sum(1 for n in range(n_items) if n % 3 == 0 and n % 2 == 0)
    losses = sum(1 for n in range(n_items) if n % 3 != 0 and n % 2 == 1)
    assert f"the candidate is better on {wins:,} , worse on {losses:,}" in text(page)
    examples = [r for r in rows(page) if re.fullmatch(r"i\d+", r[0])]
    assert len(examples) == cap
    assert all(len(r[4]) < 600 for r in examples)  # outputs are cut


def test_without_a_champion_the_champion_columns_show_a_dash() -> None:
    page = four_items(champion=None).html(
        title="app", gate_report=report(gates=[gate(kind="absolute", champion_value=None, delta=None)])
    )
    table = rows(page)
    assert ["a", "3", "0.333", DASH, DASH] in table
    assert ["b", "2", "0.500", DASH, DASH] in table
    gate_row = next(r for r in table if r[0].startswith("accuracy-vs-champion"))
    assert gate_row[3:5] == [DASH, DASH]
    assert "No champion: nothing to disagree with" in page


def test_badges_say_the_decision_in_words() -> None:
    inconclusive = four_items().html(
        title="app", gate_report=report("inconclusive", gates=[gate(verdict="inconclusive")])
    )
    assert re.search(r"class='badge inconclusive'[^>]*>INCONCLUSIVE<", inconclusive)
    assert ">PASS<" not in inconclusive and ">FAIL<" not in inconclusive
    assert "never promoted" in inconclusive
    failed = four_items().html(title="app", gate_report=report("fail", gates=[gate(verdict="fail")]))
    assert re.search(r"class='badge fail'[^>]*>FAIL<", failed)
    assert "<tr class='main fail'>" in failed  # the failed gate's row is highlighted
    passed = four_items().html(title="app", gate_report=report())
    assert re.search(r"class='badge pass'[^>]*>PASS<", passed) and "<tr class='main fail'>" not in passed


def test_gate_table_shows_interval_p_and_sizing() -> None:
    row = gate(delta=0.19444, ci_low=0.0972, ci_high=0.2917, p_value=0.000464, p_adjusted=0.000928)
    page = four_items().html(title="app", gate_report=report(gates=[row]))
    cells = next(r for r in rows(page) if r[0].startswith("accuracy-vs-champion"))
    assert cells[1] == "PASS"
    assert cells[4] == "+0.194"
    assert cells[5].startswith("[+0.097, +0.292]")
    assert cells[7].startswith("9.3e-04")
    assert "~604 items" in cells[8]
    assert "Holm correction across 2 comparison gates" in page
