"""Benchmark: operating characteristics of the gate statistics, measured by seeded Monte Carlo.

Pure (no model, no server): it draws per-item paired differences of 0/1 scores and runs the real
code of ``llmrelease.tasks.gates.statistics``, printing each corrected rate beside its naive variant:

- false promotion when the true regression equals the margin, independent items (n = 72 and 500);
  naive = the plain percentile bootstrap bound (no small-sample expansion);
- the same with 50 clusters of 10 at intra-cluster correlation 0.7; naive = clusters ignored;
- a family of 10 comparison gates all at the margin: any gate falsely passing (raw vs Holm), and
  the whole candidate promoted (every gate passing);
- power at a true effect of 0 with the demo's n (72 items, evalsets/support-triage/tickets.jsonl),
  and the MDE that implies;
- sequential monitoring (a look every chunk: the confidence sequence, and group-sequential
  boundaries with Pocock and O'Brien-Fleming alpha spending): false pass across all looks,
  and items used when the true difference is one MDE (of the full evalset) above the margin; beside
  it, the reference any valid design is measured against: an idealised group-sequential test
  (known variance, Lan-DeMets alpha spending over the same looks, no cap on what it may know).

Differences are d in {-1, 0, 1} with P(d != 0) = ``--discordance`` (the share of items on which the
two versions disagree); clusters share a drawn difference with probability sqrt(icc), which gives
that intra-cluster correlation exactly.

    .venv/bin/python bench/gate_statistics.py [--runs 4000] [--discordance 0.3] [--margin 0.05]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from llmrelease.tasks.gates.statistics import (
    ConfidenceSequence,
    GroupSequentialTest,
    holm_adjust,
    paired_comparison,
    sequential_decision,
)

DEMO_N = 72


def draw(rng, n, mean, *, discordance=0.3, clusters=None, icc=0.0):
    """Paired differences of 0/1 scores: d in {-1, 0, 1} with P(d != 0) = discordance, mean ``mean``.

    With clusters, each cluster draws one shared difference and each item copies it with
    probability sqrt(icc), else draws its own: the intra-cluster correlation is then exactly icc
    and the mean is unchanged. (The test suite draws its small Monte Carlo with this too.)"""
    up, down = (discordance + mean) / 2, (discordance - mean) / 2
    values, probs = np.array([-1.0, 0.0, 1.0]), [down, 1 - discordance, up]
    d = rng.choice(values, p=probs, size=n)
    if clusters is not None:
        shared = rng.choice(values, p=probs, size=int(clusters.max()) + 1)
        d = np.where(rng.random(n) < math.sqrt(icc), shared[clusters], d)
    return d


def rate(xs) -> str:
    xs = np.asarray(xs, dtype=float)
    return f"{xs.mean():6.1%} (±{1.96 * math.sqrt(max(xs.mean() * (1 - xs.mean()), 1e-12) / xs.size):.1%})"


def plain_percentile_pass(c, margin) -> bool:
    """The naive bound: the 5% quantile of the same bootstrap draws, without the expansion."""
    return c._draws is not None and float(np.quantile(c._draws, 0.05)) > -margin


def spending_boundaries(t: np.ndarray, alpha: float, kind: str) -> np.ndarray:
    """One-sided efficacy boundaries (z scale) at information fractions ``t`` for a Lan-DeMets
    alpha-spending function (Lan & DeMets 1983, Biometrika 70(3), 659-663): ``pocock``,
    alpha ln(1 + (e - 1) t), or ``obf`` (O'Brien-Fleming type), 2 - 2 Phi(z_{1-alpha/2} / sqrt t).
    Exact recursion on the B-value B(t) = Z sqrt(t) (independent normal increments) on a grid."""
    from scipy.stats import norm

    if kind == "pocock":
        spent = alpha * np.log(1 + (math.e - 1) * t)
    else:
        spent = 2 - 2 * norm.cdf(norm.ppf(1 - alpha / 2) / np.sqrt(t))
    step = np.diff(np.concatenate(([0.0], spent)))
    grid = np.linspace(-12, 12, 3001)
    dx = grid[1] - grid[0]
    out = np.empty(t.size)
    dens, before = None, 0.0
    for k in range(t.size):
        sd = math.sqrt(t[k] - before)
        if dens is None:
            dens = norm.pdf(grid, scale=sd)
        else:
            dens = norm.pdf(grid[:, None] - grid[None, :], scale=sd) @ (dens * dx)
        tail = np.cumsum((dens * dx)[::-1])[::-1]  # mass at or above each grid point
        c = grid[min(int(np.searchsorted(-tail, -step[k])), grid.size - 1)]
        out[k] = c / math.sqrt(t[k])
        dens, before = np.where(grid < c, dens, 0.0), t[k]
    return out


def ideal_group_sequential(rng, horizon: int, chunk: int, drift: float, kind: str, runs: int) -> tuple:
    """(pass rate, median and mean share of items used) of a one-sided group-sequential test that
    knows the variance: z = drift at the horizon is the fixed test's design point."""
    looks = np.arange(chunk, horizon + 1, chunk)
    t = looks / horizon
    b = spending_boundaries(t, 0.05, kind)
    used, passed = [], []
    for _ in range(runs):
        z = np.cumsum(rng.normal(drift * chunk / horizon, math.sqrt(chunk / horizon), looks.size)) / np.sqrt(
            t
        )
        hit = np.flatnonzero(z >= b)
        used.append(looks[hit[0]] if hit.size else horizon)
        passed.append(bool(hit.size))
    return np.mean(passed), np.median(used) / horizon, np.mean(used) / horizon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4000, help="evalsets per single-gate scenario")
    parser.add_argument("--families", type=int, default=1000, help="10-gate families")
    parser.add_argument("--streams", type=int, default=1000, help="sequential runs per scenario")
    parser.add_argument("--discordance", type=float, default=0.3)
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=20261130)
    args = parser.parse_args()
    m, disc, rng = args.margin, args.discordance, np.random.default_rng(args.seed)
    start = time.perf_counter()
    print(f"margin {m}, discordance {disc}, one-sided confidence 0.95 (nominal false promotion 5%)\n")
    print(f"{'scenario':58} {'corrected':>16} {'naive':>16}")

    for n in (DEMO_N, 500):
        corr, naive = [], []
        for i in range(args.runs):
            c = paired_comparison(draw(rng, n, -m, discordance=disc), margin=m, seed=i)
            corr.append(c.verdict == "pass")
            naive.append(plain_percentile_pass(c, m))
        label = f"false promotion at the margin, {n} independent items"
        print(f"{label:58} {rate(corr):>16} {rate(naive):>16}   (naive: plain percentile)")

    clusters = np.repeat(np.arange(50), 10)
    corr, naive, deffs = [], [], []
    for i in range(args.runs):
        d = draw(rng, 500, -m, discordance=disc, clusters=clusters, icc=0.7)
        c = paired_comparison(d, margin=m, clusters=clusters, seed=i)
        corr.append(c.verdict == "pass")
        deffs.append(c.design_effect)
        naive.append(paired_comparison(d, margin=m, seed=i, resamples=1000).verdict == "pass")
    label = "false promotion, 50 clusters x 10, ICC 0.7"
    print(f"{label:58} {rate(corr):>16} {rate(naive):>16}   (naive: clusters ignored)")
    print(f"{'  median design effect':58} {np.median(deffs):16.2f}")

    any_raw, any_holm, all_raw, all_holm = [], [], [], []
    for f in range(args.families):
        family = [
            paired_comparison(draw(rng, 100, -m, discordance=disc), margin=m, seed=10 * f + g, resamples=1000)
            for g in range(10)
        ]
        adjusted = holm_adjust(family, 0.05)
        any_raw.append(any(c.verdict == "pass" for c in family))
        any_holm.append(any(a.passed for a in adjusted))
        all_raw.append(all(c.verdict == "pass" for c in family))
        all_holm.append(all(a.passed for a in adjusted))
    label = "10 gates at the margin (100 items): any gate passes falsely"
    print(f"{label:58} {rate(any_holm):>16} {rate(any_raw):>16}   (naive: no Holm)")
    label = "10 gates at the margin: candidate promoted (all pass)"
    print(f"{label:58} {rate(all_holm):>16} {rate(all_raw):>16}")

    verdicts, mdes, needed = [], [], []
    for i in range(args.runs):
        c = paired_comparison(draw(rng, DEMO_N, 0.0, discordance=disc), margin=m, seed=i)
        verdicts.append(c.verdict)
        mdes.append(c.mde)
        needed.append(c.items_needed)
    v = np.array(verdicts)
    print(
        f"\npower at true effect 0, n = {DEMO_N}: pass {np.mean(v == 'pass'):.1%}, inconclusive "
        f"{np.mean(v == 'inconclusive'):.1%}, fail {np.mean(v == 'fail'):.1%}; median MDE "
        f"{np.median(mdes):.3f} (margin {m}); median items needed {int(np.median(needed))}"
    )

    horizon = 1000
    sd = math.sqrt(disc)  # sd of d near a mean of 0 (disc - mean^2)
    from llmrelease.tasks.gates.statistics import _multiplier

    mde = _multiplier(0.95, 0.8, horizon - 1) * sd / math.sqrt(horizon)
    chunk = 25
    methods = {
        "confidence sequence": lambda: ConfidenceSequence(alpha=0.05, horizon=horizon),
        "Pocock spending": lambda: GroupSequentialTest(alpha=0.05, horizon=horizon, spending="pocock"),
        "O'Brien-Fleming": lambda: GroupSequentialTest(
            alpha=0.05, horizon=horizon, spending="obrien_fleming"
        ),
    }
    for label, truth in (("at the margin (H0)", -m), (f"one MDE ({mde:.3f}) above the margin", -m + mde)):
        streams = [draw(rng, horizon, truth, discordance=disc) for _ in range(args.streams)]
        fixed = np.mean([paired_comparison(x, margin=m, resamples=1000).verdict == "pass" for x in streams])
        for name, make in methods.items():
            used, passed, t0 = [], [], time.perf_counter()
            for stream in streams:
                looks = make()
                decision = "undecided"
                while looks.n < horizon and decision == "undecided":
                    looks.update(stream[looks.n : looks.n + chunk])
                    decision = sequential_decision(looks, m)
                used.append(looks.n)
                passed.append(decision == "pass")
            print(
                f"sequential ({name}), {label}, horizon {horizon}, looks every {chunk}: pass "
                f"{np.mean(passed):.1%} (fixed horizon {fixed:.1%}); items used median "
                f"{int(np.median(used))} ({np.median(used) / horizon:.0%} of {horizon}), mean "
                f"{np.mean(used):.0f} [{time.perf_counter() - t0:.0f} s]"
            )
    from scipy.stats import norm

    design = float(norm.ppf(0.95) + norm.ppf(0.8))
    for kind in ("pocock", "obf"):
        for label, drift in (("at the margin (H0)", 0.0), ("one MDE above the margin", design)):
            passed, median, mean = ideal_group_sequential(rng, horizon, chunk, drift, kind, 4 * args.streams)
            print(
                f"reference: ideal group-sequential ({kind} spending, known variance), {label}: "
                f"pass {passed:.1%}; items used median {median:.0%}, mean {mean:.0%}"
            )
    print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
