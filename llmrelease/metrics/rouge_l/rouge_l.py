"""ROUGE-L F1 (longest common subsequence) between prediction and reference, with stemming."""

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = "Mean ROUGE-L F-measure; per-item scores included."


class RougeL(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Lin, 2004. ROUGE: A Package for Automatic Evaluation of Summaries.",
            inputs_description="predictions: list of str; references: list of str",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, use_stemmer=True):
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
        per_item = [
            scorer.score(r or "", p or "")["rougeL"].fmeasure
            for p, r in zip(predictions, references, strict=True)
        ]
        mean = sum(per_item) / len(per_item) if per_item else 0.0
        return {"rouge_l": mean, "per_item": per_item}
