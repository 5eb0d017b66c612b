"""Exact match after stripping surrounding whitespace; per-item 1.0 or 0.0 and their mean."""

import datasets
import evaluate

_DESCRIPTION = "Fraction of predictions equal to their reference after strip(); per-item scores included."


class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description="predictions: list of str; references: list of str",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, ignore_case=False):
        def norm(s):
            s = (s or "").strip()
            return s.lower() if ignore_case else s

        per_item = [float(norm(p) == norm(r)) for p, r in zip(predictions, references, strict=True)]
        mean = sum(per_item) / len(per_item) if per_item else 0.0
        return {"exact_match": mean, "per_item": per_item}
