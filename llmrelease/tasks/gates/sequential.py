"""Early stopping on the stream: decide comparison gates while the evalset is still generating.

Pure: numpy and :mod:`.statistics`. With ``statistics.sequential: true`` a release streams each
evalset in chunks (in a seeded random order); after every chunk each comparison gate on that
evalset takes a look at (candidate - champion), and the rest of the evalset is skipped as soon as
every one of them is decided. Looking after every chunk costs no error: by default the looks are
judged against group-sequential boundaries that spend alpha over the evalset's size (Lan-DeMets,
``statistics.GroupSequentialTest``; the chunk schedule does not depend on the data), or, with
``sequential_method: confidence_sequence``, an always-valid betting sequence that holds at every
time (Ville's inequality). Either way the false-pass rate stays at alpha.

Which gates can be watched: those on metrics scored while generating (scorers, JSON/schema
conformance). Guard and shadow metrics come from later steps, so an evalset with a comparison gate
on one of them streams to the end (its gates are then judged at the fixed horizon as usual).

Error budget: each watched gate's sequence runs at ``alpha / k`` (Bonferroni over the policy's k
comparison gates); the gates not watched share the rest, ``alpha (k - m) / k``, with Holm among
themselves. Together at most alpha, as without early stopping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from llmrelease.catalogue import MetricCatalogue
from llmrelease.specs import Gate, GatePolicy
from llmrelease.tasks.gates.statistics import ConfidenceSequence, GroupSequentialTest, sequential_decision

__all__ = ["WATCHABLE_PRODUCERS", "SequentialMonitor", "WatchedGate"]

WATCHABLE_PRODUCERS = ("scorer:", "structured_output")
"""Producers whose per-item scores exist as soon as a chunk is generated and scored."""


@dataclass
class WatchedGate:
    gate: Gate
    direction: str
    margin: float
    champion: Mapping[str, float]
    cs: ConfidenceSequence | GroupSequentialTest
    """The sequence of looks: alpha-spending boundaries or an always-valid confidence sequence."""
    looks: int = 0
    decision: str = "undecided"
    decided_at: int | None = None
    """Items seen when the gate was first decided."""


@dataclass
class SequentialMonitor:
    """The watched gates of a policy, grouped by evalset, fed chunk by chunk."""

    alpha_each: float
    alpha_rest: float
    watched: dict[str, list[WatchedGate]] = field(default_factory=dict)
    """Evalset name -> its watched gates (only evalsets whose every comparison gate is watchable)."""
    used: dict[str, int] = field(default_factory=dict)
    stopped: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def for_policy(
        cls,
        policy: GatePolicy,
        catalogue: MetricCatalogue,
        champion_items: Mapping[str, Mapping[str, float]],
        horizons: Mapping[str, int],
        clustered: frozenset[str] = frozenset(),
    ) -> SequentialMonitor:
        """Watch every evalset whose comparison gates are all on watchable metrics the champion
        has scores for; ``horizons`` (evalset -> rows) tunes each sequence to be tightest there.
        ``clustered`` evalsets are not watched: the sequences assume independent items."""
        stats = policy.stats
        comparisons = [g for g in policy.gates if g.kind == "non_inferiority"]
        k = len(comparisons)
        by_evalset: dict[str, list[Gate]] = {}
        for g in comparisons:
            by_evalset.setdefault(g.metric.split(".", 1)[0], []).append(g)
        watched: dict[str, list[WatchedGate]] = {}
        alpha_each = stats.alpha / k if k else stats.alpha
        for evalset, gates in by_evalset.items():
            if evalset in clustered:
                continue
            defs = [catalogue.get(g.metric) for g in gates]
            if not all(
                d is not None and d.per_item and d.producer.startswith(WATCHABLE_PRODUCERS) for d in defs
            ) or not all(champion_items.get(g.metric) for g in gates):
                continue
            watched[evalset] = [
                WatchedGate(
                    g,
                    d.direction,  # type: ignore[union-attr]
                    float(g.max_regression or 0.0),
                    champion_items[g.metric],
                    _looks(stats.sequential_method, alpha_each, horizons.get(evalset)),
                )
                for g, d in zip(gates, defs, strict=True)
            ]
        m = sum(len(v) for v in watched.values())
        rest = stats.alpha * (k - m) / k if k else stats.alpha
        return cls(alpha_each=alpha_each, alpha_rest=rest, watched=watched)

    def watches(self, evalset: str) -> bool:
        return evalset in self.watched

    def update(self, evalset: str, ids: Sequence[str], scores: Mapping[str, Sequence[float]]) -> bool:
        """Add one chunk of the candidate's per-item scores (metric -> values in ``ids`` order);
        True once every watched gate of ``evalset`` is decided (the rest may be skipped)."""
        self.used[evalset] = self.used.get(evalset, 0) + len(ids)
        gates = self.watched.get(evalset)
        if not gates:
            return False
        for w in gates:
            values = scores.get(w.gate.metric)
            if values is None:
                continue
            cand = np.asarray(values, dtype=float)
            champ = np.array([w.champion.get(i, np.nan) for i in ids], dtype=float)
            keep = ~np.isnan(champ)  # items the champion was not scored on cannot be paired
            w.cs.update(cand[keep] - champ[keep])
            w.looks += 1
            if w.decision == "undecided":
                w.decision = sequential_decision(w.cs, w.margin, w.direction)  # type: ignore[arg-type]
                if w.decision != "undecided":
                    w.decided_at = w.cs.n
        done = all(w.decision != "undecided" for w in gates)
        if done:
            self.stopped[evalset] = True
        return done

    def sequences(self) -> dict[str, WatchedGate]:
        """Gate name -> its watched state, for the gate decisions."""
        return {w.gate.name: w for gates in self.watched.values() for w in gates}


def _looks(method: str, alpha: float, horizon: int | None) -> ConfidenceSequence | GroupSequentialTest:
    if method == "confidence_sequence" or not horizon:
        return ConfidenceSequence(alpha=alpha, horizon=horizon)
    return GroupSequentialTest(alpha=alpha, horizon=horizon, spending=method)
