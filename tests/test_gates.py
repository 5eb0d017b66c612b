"""Gate decisions on fixed numbers: three verdicts, Holm, clusters, exact tests, bounds. No server."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from llmrelease.catalogue import MetricCatalogue, MetricDef
from llmrelease.specs import Gate, GatePolicy
from llmrelease.tasks.gates.decisions import evaluate_gates as _evaluate_gates

CATALOGUE = MetricCatalogue(
    [
        MetricDef("e.acc", "higher", True, "score", "scorer:exact_match"),
        MetricDef("e.fmt", "higher", True, "score", "scorer:exact_match"),
        MetricDef("e.rouge", "higher", True, "score", "scorer:rouge_l"),
        MetricDef("e.bad", "lower", True, "rate", "guard"),
    ]
)


def evaluate_gates(*args, catalogue: MetricCatalogue = CATALOGUE, **kwargs):
    return _evaluate_gates(*args, catalogue=catalogue, **kwargs)


def policy(*gates: dict, **statistics) -> GatePolicy:
    return GatePolicy(version="g1", statistics={"seed": 7, **statistics}, gates=list(gates))


POLICY = policy(
    {"name": "floor", "metric": "e.acc", "min": 0.5},
    {"name": "ceiling", "metric": "e.bad", "max": 0.1},
    {"name": "vs-champion", "metric": "e.acc", "max_regression": 0.05},
)


def items(values) -> dict[str, float]:
    return {f"i{k:04d}": float(v) for k, v in enumerate(values)}


def run(cand, champ, bad: float = 0.0, pol: GatePolicy = POLICY):
    agg = {"e.acc": float(np.mean(cand)), "e.bad": bad}
    champion = {"e.acc": items(champ)} if champ is not None else None
    version = "1" if champ is not None else None
    return evaluate_gates(pol, agg, {"e.acc": items(cand)}, champion, champion_version=version)


def gate(report, name="vs-champion"):
    return next(r for r in report.results if r.name == name)


def test_the_same_inputs_give_the_same_report() -> None:
    rng = np.random.default_rng(0)
    champ, cand = rng.integers(0, 2, 80), rng.integers(0, 2, 80)
    assert run(cand, champ).to_dict() == run(cand, champ).to_dict()


def test_first_release_skips_comparison_and_applies_absolute_gates() -> None:
    report = run([1, 1, 0, 1], None)
    assert {r.name: r.verdict for r in report.results} == {
        "floor": "pass",
        "ceiling": "pass",
        "vs-champion": "skipped",
    }
    assert report.passed and report.decision == "pass"


def test_absolute_floor_and_ceiling_on_the_value() -> None:
    assert [r.name for r in run([0, 0, 1, 0], None).failed] == ["floor"]
    assert [r.name for r in run([1, 1], None, bad=0.2).failed] == ["ceiling"]


def test_clearly_better_candidate_passes_and_reports_its_evidence() -> None:
    g = gate(run([1, 1, 1, 0] * 20, [1, 0] * 40))
    assert g.verdict == "pass" and g.delta == pytest.approx(0.25) and g.n == 80
    assert g.bound is not None and 0 < g.bound < 0.25 and g.ci_low == g.bound and g.ci_high > 0.25
    assert g.p_value is not None and g.p_value < 0.001 and g.p_exact is not None
    assert g.exact_test and "Tango" in g.exact_test
    assert g.mde is not None and 0 < g.mde < 0.5 and g.effective_n == pytest.approx(80)
    assert "MDE" in g.evidence and g.confidence == 0.95


def test_clearly_worse_candidate_fails() -> None:
    g = gate(run([1, 0] * 40, [1, 1, 1, 0] * 20))
    assert g.verdict == "fail" and g.ci_high is not None and g.ci_high < -0.05
    report = run([1, 0] * 40, [1, 1, 1, 0] * 20)
    assert report.decision == "fail" and not report.passed


def test_one_flip_in_two_hundred_is_within_the_margin() -> None:
    champ = [1, 0] * 100
    cand = list(champ)
    cand[0] = 0
    assert gate(run(cand, champ)).verdict == "pass"


def test_ten_noisy_items_are_inconclusive_not_failed() -> None:
    """Mean delta 0 on 10 items, 5 flips each way: the bound misses the margin, but 10 items could
    not have shown non-inferiority for an equal candidate either; the gate says how many would."""
    g = gate(run([0] * 5 + [1] * 5, [1] * 5 + [0] * 5))
    assert g.delta == 0 and g.verdict == "inconclusive"
    assert g.mde is not None and g.mde > 0.05 and g.items_needed is not None and g.items_needed > 100
    report = run([0] * 5 + [1] * 5, [1] * 5 + [0] * 5)
    assert report.decision == "inconclusive" and not report.passed and not report.failed


def test_ties_on_every_item_need_enough_items_for_the_margin() -> None:
    """The old gate passed 72 ties at any margin (a point interval). 72 ties bound a hidden rise by
    ~4.1%: a 2-point margin is INCONCLUSIVE and asks for ~149 items, a 5-point margin passes."""
    pol = policy({"name": "unsafe", "metric": "e.bad", "max_regression": 0.02})
    zeros = items([0] * 72)
    g = evaluate_gates(pol, {"e.bad": 0.0}, {"e.bad": zeros}, {"e.bad": zeros}).results[0]
    assert (
        g.verdict == "inconclusive" and g.items_needed == 149 and g.bound == pytest.approx(0.0408, abs=1e-4)
    )
    wider = policy({"name": "unsafe", "metric": "e.bad", "max_regression": 0.05})
    assert (
        evaluate_gates(wider, {"e.bad": 0.0}, {"e.bad": zeros}, {"e.bad": zeros}).results[0].verdict == "pass"
    )


def _two_gate_family(correction: str):
    """Two comparison gates that each clear alone at 95% (p between 0.025 and 0.05), not both under Holm."""
    pol = policy(
        {"name": "acc", "metric": "e.acc", "max_regression": 0.05},
        {"name": "rouge", "metric": "e.rouge", "max_regression": 0.05},
        correction=correction,
    )
    rng = np.random.default_rng(3)
    champ = rng.uniform(0.3, 0.7, 400)
    # Same noise in both metrics; shift so each bound sits just above -0.05.
    cand = champ + rng.normal(-0.0, 0.25, 400)
    cand = cand - (np.mean(cand - champ) + 0.05) + 1.8 * 0.25 / math.sqrt(400)
    cand_items, champ_items = items(cand), items(champ)
    return evaluate_gates(
        pol,
        {"e.acc": float(cand.mean()), "e.rouge": float(cand.mean())},
        {"e.acc": cand_items, "e.rouge": cand_items},
        {"e.acc": champ_items, "e.rouge": champ_items},
    )


def test_holm_adjusts_the_family_of_comparison_gates() -> None:
    alone = _two_gate_family("none")
    family = _two_gate_family("holm")
    for a, f in zip(alone.results, family.results, strict=True):
        assert 0.025 < a.p_value < 0.05 and a.verdict == "pass"  # each clears at 95% alone
        assert f.p_adjusted == pytest.approx(min(1, 2 * f.p_value)) and f.p_adjusted > 0.05
        assert f.bound_adjusted < f.bound and f.confidence_adjusted > f.confidence
        assert f.verdict in ("inconclusive", "fail")  # removing Holm would pass both
    assert family.statistics["family_size"] == 2 and not family.passed


def test_clusters_widen_the_bound_and_report_the_design_effect() -> None:
    """20 clusters of 10 items that move together: by item the candidate looks clearly fine; by
    cluster there are only 20 independent units, and the gate cannot tell."""
    rng = np.random.default_rng(5)
    cluster_effect = np.repeat(rng.normal(0, 0.3, 20), 10)
    champ = np.full(200, 0.5)
    cand = np.clip(champ + cluster_effect - cluster_effect.mean() + 0.0, 0, 1)
    labels = {f"i{k:04d}": f"c{k // 10}" for k in range(200)}
    pol = policy({"name": "rouge", "metric": "e.rouge", "max_regression": 0.05})
    args = (pol, {"e.rouge": float(cand.mean())}, {"e.rouge": items(cand)}, {"e.rouge": items(champ)})
    naive = evaluate_gates(*args).results[0]
    clustered = evaluate_gates(*args, clusters={"e": labels}).results[0]
    assert naive.verdict == "pass" and naive.design_effect == pytest.approx(1.0)
    assert clustered.clusters == 20 and clustered.design_effect > 5 and clustered.effective_n < 40
    assert clustered.bound < naive.bound and clustered.verdict != "pass"
    assert "20 clusters" in clustered.evidence


@pytest.mark.parametrize(
    ("right", "interval", "verdict"),
    [(23, "auto", "pass"), (18, "auto", "inconclusive"), (5, "auto", "fail"), (17, "exact", "inconclusive")],
)
def test_absolute_floor_on_the_lower_bound(right: int, interval: str, verdict: str) -> None:
    pol = policy({"name": "floor", "metric": "e.acc", "min": 0.2, "on": "lower_bound", "interval": interval})
    v = [1] * right + [0] * (72 - right)
    g = evaluate_gates(pol, {"e.acc": right / 72}, {"e.acc": items(v)}, None).results[0]
    assert g.verdict == verdict and g.threshold == ">= 0.2 (lower bound)"
    assert g.bound is not None and g.bound < right / 72 < g.ci_high
    assert ("Wilson" if interval == "auto" else "Clopper-Pearson") in g.method


def test_wilson_is_refused_for_scores_that_are_not_rates() -> None:
    pol = policy(
        {"name": "floor", "metric": "e.rouge", "min": 0.2, "on": "lower_bound", "interval": "wilson"}
    )
    g = evaluate_gates(pol, {"e.rouge": 0.5}, {"e.rouge": items([0.4, 0.6] * 10)}, None).results[0]
    assert g.verdict == "fail" and "0/1 rates" in g.evidence
    boot = policy({"name": "floor", "metric": "e.rouge", "min": 0.2, "on": "lower_bound"})
    g = evaluate_gates(boot, {"e.rouge": 0.5}, {"e.rouge": items([0.4, 0.6] * 10)}, None).results[0]
    assert g.verdict == "pass" and g.method == "bootstrap"


def test_the_report_is_strict_json_even_when_the_mde_is_infinite() -> None:
    report = run([1], [0])  # one item: no variance, MDE cannot be estimated
    data = report.to_dict()
    json.dumps(data, allow_nan=False)
    g = data["gates"][2]
    assert g["verdict"] == "inconclusive" and g["mde"] is None and data["decision"] == "inconclusive"


def test_the_old_bootstrap_block_keeps_its_bound() -> None:
    old = GatePolicy(
        version="g",
        bootstrap={"confidence": 0.95, "seed": 3},
        gates=[{"name": "a", "metric": "e.acc", "min": 0}],
    )
    assert old.stats.confidence == pytest.approx(0.975) and old.stats.seed == 3
    assert GatePolicy(version="g", gates=old.gates).stats.confidence == 0.95


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"min": 0.2, "on": "upper_bound"}, "lower bound"),
        ({"max_regression": 0.1, "on": "lower_bound"}, "absolute gates"),
        ({"min": 0.2, "interval": "wilson"}, "only with on"),
    ],
)
def test_bad_gate_options_are_explained(data: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Gate(name="g", metric="e.acc", **data)


def test_statistics_and_its_old_name_together_are_refused() -> None:
    with pytest.raises(ValidationError, match="not both"):
        GatePolicy(
            version="g", statistics={}, bootstrap={}, gates=[{"name": "a", "metric": "e.acc", "min": 0}]
        )


def test_the_exact_test_overrules_a_bootstrap_too_narrow_for_rare_disagreements() -> None:
    """One item of 72 lost, none won: the bootstrap's bound clears a 5-point margin (p 0.02), but a
    loss rate of 1/72 is compatible with a true rate above 6%; Tango's test says p 0.08."""
    pol = policy({"name": "vs", "metric": "e.acc", "max_regression": 0.05})
    champ = [1.0] * 72
    cand = [0.0] + [1.0] * 71
    g = evaluate_gates(pol, {"e.acc": 71 / 72}, {"e.acc": items(cand)}, {"e.acc": items(champ)}).results[0]
    assert g.p_exact == pytest.approx(0.0799, abs=1e-3) and g.p_value == g.p_exact
    assert g.bound > -0.05 and g.verdict == "inconclusive"
    assert "exact test does not" in g.reason


def test_the_gate_table_shows_bounds_holm_the_interval_method_and_what_would_decide() -> None:
    from rich.console import Console

    from llmrelease.report import gate_table

    pol = policy(
        {"name": "floor", "metric": "e.acc", "min": 0.2, "on": "lower_bound"},
        {"name": "unsafe", "metric": "e.bad", "max_regression": 0.02},
        {"name": "acc", "metric": "e.acc", "max_regression": 0.05},
    )
    acc = items([1, 0, 0, 0] * 18)
    zeros = items([0] * 72)
    report = evaluate_gates(
        pol, {"e.acc": 0.25, "e.bad": 0.0}, {"e.acc": acc, "e.bad": zeros}, {"e.acc": acc, "e.bad": zeros}
    )
    console = Console(width=120, record=True)
    console.print(gate_table(report.to_dict()))
    text = console.export_text()
    assert "INCONCLUSIVE" in text and "~149 items" in text and "(lower bound), Wilson" in text
    assert "95% / Holm" in text and "Holm across 2 comparison gates" in text and "[90% CI]" in text
    assert max(len(line) for line in text.splitlines()) <= 120


SHADOW_CATALOGUE = MetricCatalogue(
    [
        MetricDef("e.acc", "higher", True, "score", "scorer:exact_match"),
        MetricDef("e.bad", "lower", True, "rate", "guard"),
        MetricDef("shadow.cost_ratio", "lower", False, "ratio", "shadow"),
    ]
)
WITH_SHADOW = policy(
    {"name": "floor", "metric": "e.acc", "min": 0.3},
    {"name": "ceiling", "metric": "e.bad", "max": 0.1},
    {"name": "vs-champion", "metric": "e.acc", "max_regression": 0.05},
    {"name": "shadow-cost", "metric": "shadow.cost_ratio", "max": 3.0},
)


def test_a_step_not_run_skips_its_gates_with_the_reason_and_changes_no_other_verdict() -> None:
    cand, champ = [1, 0] * 40, [1, 1, 1, 0] * 20
    agg = {"e.acc": float(np.mean(cand)), "e.bad": 0.0}
    args = (WITH_SHADOW, agg, {"e.acc": items(cand)}, {"e.acc": items(champ)})
    kwargs = {"catalogue": SHADOW_CATALOGUE, "champion_version": "1"}
    missing = evaluate_gates(*args, **kwargs)  # the replay did not run and nobody said why
    assert gate(missing, "shadow-cost").verdict == "fail"  # missing data fails closed
    skipped = evaluate_gates(*args, **kwargs, not_run={"shadow": "not replayed: already failed"})
    g = gate(skipped, "shadow-cost")
    assert (g.verdict, g.evidence) == ("skipped", "not replayed: already failed")
    others = [r for r in skipped.results if r.name != "shadow-cost"]
    assert [(r.name, r.verdict, r.bound_adjusted) for r in others] == [
        (r.name, r.verdict, r.bound_adjusted) for r in missing.results if r.name != "shadow-cost"
    ]
    assert skipped.decision == "fail"  # vs-champion failed
    # A value that is there is judged, whatever not_run says.
    present = evaluate_gates(
        WITH_SHADOW, {**agg, "shadow.cost_ratio": 5.0}, *args[2:], **kwargs, not_run={"shadow": "x"}
    )
    assert gate(present, "shadow-cost").verdict == "fail"
