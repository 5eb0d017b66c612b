"""Feedback -> snapshots, as pure logic on the shipped demo log: attribution, scrubbing, dedupe and
byte-for-byte rebuilds. No server: versions and prompts are given as the registry would give them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from llmrelease.errors import EvalsetError
from llmrelease.project import load_app
from llmrelease.specs import EvalsetCard, EvalsetRow, PromptSpec, ServedBy, TrafficSpec
from llmrelease.tasks.feedback.attribution import attribute
from llmrelease.tasks.feedback.harvest import LoggedRequest, build_harvest, normalise
from llmrelease.tasks.feedback.scrub import scrub
from llmrelease.tasks.promotion.champion_history import (
    ChampionEvent,
    champion_at,
    parse_events,
    record_champion,
)
from llmrelease.tasks.shadow.traffic import read_traffic

ROOT = Path(__file__).resolve().parents[1]
APP = "support-triage"
PLANTED = [
    "4111 1111 1111 1111", "415 555 0132", "dana.w@example.org", "020 7946 0958", "07700 900123",
    "jane.roe@example.net", "DE89 3704 0044 0532 0130 00", "5500-0000-0000-0004", "bob.smith@example.com",
    "finance@example.com",
]  # fmt: skip


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _demo(registered: dict[str, int | None], history: list[ChampionEvent] | None = None):
    spec = load_app(ROOT, APP)
    sample = read_traffic(TrafficSpec(source=spec.shadow.traffic.source, n=1_000_000), APP, project_root=ROOT)
    requests = []
    for i, r in enumerate(sample.records):
        who = attribute(r.served, r.timestamp, registered=registered, history=history or [])
        requests.append(LoggedRequest(r, sample.line_of(i) or 0, who))
    baseline = yaml.safe_load((ROOT / "examples" / APP / "baseline.prompt.yaml").read_text())
    prompts = {1: PromptSpec.model_validate(baseline), 2: spec.prompt}

    def render(version: int, variables: dict[str, str]):
        return prompts[version].render(variables) if version in prompts else None

    scorers = [s for ev in spec.evalsets for s in ev.card.scorers]
    return build_harvest(
        APP, requests, source=spec.shadow.traffic.source, render=render, scorers=scorers,
        structured=True, lines_read=sample.lines_read,
    )  # fmt: skip


def test_served_and_feedback_errors_name_the_line_and_field(tmp_path: Path) -> None:
    log = tmp_path / "traffic.jsonl"
    good = {"timestamp": "2026-11-16T08:00:00Z", "app": APP, "vars": {"ticket": "x"}}
    bad_lines = [
        ({"feedback": {"score": 7}}, "feedback.score", "whole number from 1 to 5"),
        ({"feedback": {"score": True}}, "feedback.score", "whole number from 1 to 5"),
        ({"feedback": {"reason": "no score"}}, "feedback", "a 'score' or a 'correction'"),
        ({"feedback": {"score": "up", "stars": 5}}, "feedback.stars", "unknown field"),
        ({"served": {"prompt_version": 2}}, "served", "'alias' or the 'model_version'"),
        ({"served": {"model_version": "v2"}}, "served.model_version", "pattern"),
    ]
    for extra, field, message in bad_lines:
        log.write_text(json.dumps(good) + "\n" + json.dumps(good | extra) + "\n")
        with pytest.raises(EvalsetError) as info:
            read_traffic(TrafficSpec(source=str(log)), APP, project_root=tmp_path)
        err = info.value
        assert (err.line, err.field) == (2, field), (extra, err)
        assert message in str(err), (extra, str(err))


def test_attribution_checks_the_log_against_the_registry_and_reads_the_history() -> None:
    registered = {"1": 1, "2": 2, "3": 3}
    history = [
        ChampionEvent(_t("2026-11-16T00:00:00"), 1, "1", 1, "promote"),
        ChampionEvent(_t("2026-11-19T10:00:00"), 2, "2", 2, "promote"),
        ChampionEvent(_t("2026-11-21T00:00:00"), 3, "3", 3, "hand_move"),
        ChampionEvent(_t("2026-11-21T00:05:00"), 4, "2", 2, "revert"),
    ]

    def at(served, when):
        return attribute(served, _t(when), registered=registered, history=history)

    logged = at(ServedBy(model_version="3", prompt_version=3), "2026-11-17T00:00:00")
    assert (logged.model_version, logged.prompt_version, logged.how) == ("3", 3, "logged")
    assert at(ServedBy(model_version="2"), "2026-11-17T00:00:00").prompt_version == 2  # from the registry
    wrong = at(ServedBy(model_version="2", prompt_version=1), "2026-11-17T00:00:00")
    assert wrong.how == "none" and "registered with prompt v2" in wrong.why
    assert "not registered" in at(ServedBy(model_version="9"), "2026-11-17T00:00:00").why
    assert "only the champion's history" in at(ServedBy(alias="canary"), "2026-11-17T00:00:00").why
    assert at(None, "2026-11-18T23:59:59").model_version == "1"
    assert at(ServedBy(alias="champion"), "2026-11-19T10:00:00").model_version == "2"  # at the move: new
    assert at(None, "2026-11-21T00:01:00").model_version == "3"  # the hand move served until its revert
    assert at(None, "2026-11-22T00:00:00").model_version == "2"
    early = at(None, "2026-11-15T00:00:00")
    assert early.how == "none" and "before the first recorded champion" in early.why
    assert "no champion history" in attribute(None, _t("2026-11-17T00:00:00"), registered={}, history=[]).why


class _Tags:
    """A registered model's tags, as record_champion reads and writes them."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}

    def model_tags(self, app: str) -> dict[str, str]:
        return dict(self.tags)

    def set_model_tag(self, app: str, key: str, value: str) -> None:
        self.tags[key] = value


def test_champion_history_appends_once_per_move_keeps_write_order_and_ignores_edited_tags() -> None:
    reg = _Tags()
    record_champion(reg, APP, "1", 1, op="promote", at="2026-11-16T08:00:00+00:00")  # type: ignore[arg-type]
    record_champion(reg, APP, "1", 1, op="promote", at="2026-11-16T08:00:00+00:00")  # completed twice
    record_champion(reg, APP, "1", 1, op="hand_move", at="2026-11-16T08:00:05+00:00")  # its own webhook
    record_champion(reg, APP, "3", 3, op="hand_move", at="2026-11-19T10:00:00+00:00")  # type: ignore[arg-type]
    record_champion(reg, APP, "1", 1, op="revert", at="2026-11-19T10:00:00+00:00")  # same second  # type: ignore[arg-type]
    reg.tags["llmrelease.champion_history.garbage"] = "{not json"
    events = parse_events(reg.tags)
    assert [(e.version, e.op) for e in events] == [("1", "promote"), ("3", "hand_move"), ("1", "revert")]
    assert champion_at(events, _t("2026-11-18T00:00:00")).version == "1"
    assert champion_at(events, _t("2026-11-19T10:00:00")).version == "1"  # the revert came after the move
    assert champion_at(events, _t("2026-11-15T00:00:00")) is None


def test_demo_log_is_attributed_scrubbed_deduplicated_and_rebuilt_byte_for_byte() -> None:
    first = _demo({"1": 1, "2": 2, "3": 3})
    again = _demo({"1": 1, "2": 2, "3": 3})
    for kind, snap in first.snapshots.items():
        assert snap.data == again.snapshots[kind].data, kind
        assert snap.name == again.snapshots[kind].name and snap.digest[:16] in snap.name
    assert first.card == again.card

    s = first.summary
    assert s["feedback"] >= 30
    assert s["attributed"]["share"] >= 0.95
    assert [u["id"] for u in s["unattributed"]] == ["req-0046"]  # served by 'canary', no version
    assert "canary" in s["unattributed"][0]["why"]
    assert s["duplicates_dropped"] == 2  # req-0002 and req-0042, req-0043 and req-0044
    served = {row["served"]: row for row in s["per_version"]}
    assert set(served) == {"v1/prompt v1", "v2/prompt v2", "unattributed"}
    v1 = served["v1/prompt v1"]
    assert v1["requests"] == 19 and v1["feedback"] == 12
    lo, hi = v1["negative_share_ci95"]
    assert lo < v1["negative_share"] < hi

    everything = b"".join(snap.data for snap in first.snapshots.values()) + first.card
    for planted in PLANTED:
        assert planted.encode() not in everything, planted
    assert b"agent-" not in everything  # who gave feedback is never written

    rows = [EvalsetRow.model_validate_json(line) for line in first.snapshots["regression"].data.splitlines()]
    assert rows and all(isinstance(r.reference, dict) and r.meta["served"] for r in rows)
    assert len({r.id for r in rows}) == len(rows)
    card = EvalsetCard.model_validate(yaml.safe_load(first.card))
    assert card.harvest is not None and card.harvest.digest == first.snapshots["regression"].digest
    assert {sc.name for sc in card.scorers} == {"category_accuracy", "urgency_accuracy"}

    sft = [json.loads(line) for line in first.snapshots["sft"].data.splitlines()]
    assert sft and all(r["messages"][-1]["role"] == "assistant" for r in sft)
    fewshot = [r for r in sft if r["meta"]["served"] == "v2/prompt v2"]
    assert fewshot and len(fewshot[0]["messages"]) > 10  # the served few-shot prompt, rendered
    prefs = [json.loads(line) for line in first.snapshots["preference"].data.splitlines()]
    assert all(p["chosen"] != p["rejected"] for p in prefs)
    assert any("rejected_served" in p["meta"] for p in prefs)  # a better- vs worse-rated answer pair
    left = s["left_out"]
    assert any("req-0048" in x and "chat messages" in x for x in left["regression"])
    assert any("req-0050" in x and "no correction" in x for x in left["regression"])


def test_unknown_versions_are_listed_not_guessed() -> None:
    h = _demo({})
    assert h.summary["attributed"]["exact"] == 0
    assert all("not registered" in u["why"] or "canary" in u["why"] for u in h.summary["unattributed"])
    sft = [json.loads(line) for line in h.snapshots["sft"].data.splitlines()]
    assert all("messages" in r for r in sft) and len(sft) == 1  # only the request logged as chat messages


def test_scrub_and_normalise() -> None:
    assert scrub("no personal data in order 88412") == "no personal data in order 88412"
    assert scrub("card 4111-1111-1111-1111, mail a.b@c.org") == "card <CREDIT_CARD>, mail <EMAIL_ADDRESS>"
    assert normalise("The App  crashes EVERY time!!") == normalise("the app crashes every time")


def test_a_rise_in_negative_feedback_is_flagged_only_when_chance_does_not_explain_it() -> None:
    from llmrelease.tasks.feedback.signal import compare_negative

    def row(served: str, negative: int, feedback: int) -> dict:
        return {"served": served, "negative": negative, "feedback": feedback}

    # Fisher, one-sided, by hand: P(X >= 8) for 10 draws from 10 negatives among 20 ratings
    # = (C(10,8)C(10,2) + C(10,9)C(10,1) + C(10,10)C(10,0)) / C(20,10) = 2126 / 184756.
    rose = compare_negative(row("v2/prompt v2", 8, 10), row("v1/prompt v1", 2, 10))
    assert rose.p_value == pytest.approx(2126 / 184756) and rose.flagged
    assert "ROSE" in rose.text and "80% (8/10)" in rose.text
    fell = compare_negative(row("v2/prompt v2", 2, 10), row("v1/prompt v1", 8, 10))
    assert not fell.flagged and fell.p_value > 0.99
    same = compare_negative(row("v2/prompt v2", 3, 6), row("v1/prompt v1", 2, 6))
    assert not same.flagged  # 50% vs 33% on six ratings each: chance explains it
    assert compare_negative(row("v2/prompt v2", 0, 0), row("v1/prompt v1", 2, 6)).p_value == 1.0
