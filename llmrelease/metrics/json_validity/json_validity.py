"""JSON validity: the prediction parses as JSON and, when a schema is given, conforms to it."""

import json

import datasets
import evaluate
import jsonschema

_DESCRIPTION = (
    "Fraction of predictions that parse as JSON and satisfy the JSON Schema; per-item scores "
    "(per_item: parses and conforms; parses: parses at all) included."
)


class JsonValidity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description="predictions: list of str; schema: JSON Schema as a JSON string (optional)",
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, schema=None):
        validator = jsonschema.Draft202012Validator(json.loads(schema)) if schema else None
        per_item, parses = [], []
        for p in predictions:
            try:
                value = json.loads(p)
            except (TypeError, ValueError):
                per_item.append(0.0)
                parses.append(0.0)
                continue
            parses.append(1.0)
            per_item.append(float(validator is None or validator.is_valid(value)))
        mean = sum(per_item) / len(per_item) if per_item else 0.0
        return {"json_valid": mean, "per_item": per_item, "parses": parses}
