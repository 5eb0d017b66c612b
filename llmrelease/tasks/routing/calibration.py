"""Calibration: does the router escalate the share of recent traffic it was meant to? Pure numpy.

A threshold on log-probabilities means nothing by itself; what the router was judged on is the share
of requests it escalates (and so its cost). When production traffic drifts (longer tickets, a new
topic the cheap prompt is unsure of), the same threshold escalates another share. Calibration
measures the share on recent traffic with the router's threshold, flags it when it leaves
``target ± band``, and re-fits the threshold that would escalate the target share on that traffic
(from the confidences alone, as at release).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmrelease.tasks.routing.cascade import escalates, fit_threshold

__all__ = ["Calibration", "calibrate"]


@dataclass(frozen=True)
class Calibration:
    requests: int
    threshold: float
    """The router's threshold (the version's)."""
    share: float
    """Share of the requests it escalates on this traffic."""
    target: float
    band: float
    refit_threshold: float
    """The threshold that escalates the share nearest ``target`` on this traffic."""
    refit_share: float

    @property
    def within_band(self) -> bool:
        return abs(self.share - self.target) <= self.band + 1e-12

    def describe(self) -> str:
        where = "within" if self.within_band else "OUTSIDE"
        return (
            f"escalates {self.share:.0%} of {self.requests} recent requests at threshold "
            f"{self.threshold:.4f}, {where} {self.target:.0%} ± {self.band:.0%}; threshold "
            f"{self.refit_threshold:.4f} would escalate {self.refit_share:.0%}"
        )


def calibrate(confidence: np.ndarray, threshold: float, *, target: float, band: float) -> Calibration:
    """``confidence``: the cheap route's, per recent request (-inf where forced out)."""
    conf = np.asarray(confidence, dtype=float)
    if conf.size == 0:
        raise ValueError("no recent requests to calibrate on")

    def share(t: float) -> float:
        return float(np.mean(escalates(conf, t)))

    refit = fit_threshold(conf, target)
    return Calibration(
        requests=int(conf.size),
        threshold=float(threshold),
        share=share(threshold),
        target=float(target),
        band=float(band),
        refit_threshold=refit,
        refit_share=share(refit),
    )
