"""The learned router: a text classifier that predicts, before any model answers, whether the cheap
route is enough for a request.

scikit-learn, trained offline on the quality evalset. A request's features are TF-IDF word uni- and
bigrams of its template variables' values (the request, not a prompt: both routes share it); its
label is whether the cheap route's answer scored at least as well as the strong route's on that item
(a tie goes to the cheap route, which costs less). The classifier gives P(cheap is enough), the
router's *confidence*: a request goes to the strong route when it is below the threshold, so the
sweep, APGR, CPT and calibration of :mod:`.cascade` apply unchanged.

The labels are the evaluation's own outcomes, so scoring the router on the items it was trained on
would flatter it. :func:`cross_fit` gives every item a prediction from a classifier that did not see
it (k-fold, whole clusters per fold when items are not independent); those out-of-fold confidences
are what the router is judged on. The version registered (:func:`fit`) is trained on every item:
the evaluation measures the training procedure, as cross-validation does, and the intervals hold
the out-of-fold predictions fixed (the classifier's own training variance is not in them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmrelease.specs import ClassifierPolicy

__all__ = ["CLASSIFIER_FILE", "RequestClassifier", "request_text", "fit", "cross_fit", "cheap_enough", "load"]

CLASSIFIER_FILE = "router/classifier.skops"
"""Where the router run keeps a classifier policy's trained classifier (artifact path)."""


def request_text(variables: Mapping[str, str]) -> str:
    """A request's text for the classifier: its template variables' values, in name order."""
    return "\n".join(str(variables[k]) for k in sorted(variables))


def cheap_enough(cheap_quality: np.ndarray, strong_quality: np.ndarray) -> np.ndarray:
    """The label: the cheap route's answer scored at least as well as the strong route's."""
    return np.asarray(cheap_quality, dtype=float) >= np.asarray(strong_quality, dtype=float)


def _pipeline(policy: ClassifierPolicy, labels: np.ndarray, n: int) -> Any:
    from sklearn.dummy import DummyClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline

    if len(np.unique(labels)) < 2:
        # One class seen: nothing to learn; predict its share (0 or 1), as a router must still answer.
        model: Any = DummyClassifier(strategy="prior")
    elif policy.algorithm == "knn":
        model = KNeighborsClassifier(
            n_neighbors=min(policy.neighbours, n), metric="cosine", algorithm="brute"
        )
    else:
        model = LogisticRegression(class_weight="balanced", max_iter=1000)
    return Pipeline(
        [("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)), ("model", model)]
    )


@dataclass(frozen=True)
class RequestClassifier:
    """A fitted classifier; :meth:`confidence` is P(cheap is enough) per request text."""

    pipeline: Any
    algorithm: str
    trained_on: int
    """Items it was trained on."""
    cheap_enough_share: float
    """Share of those items whose label was 'cheap is enough'."""

    def confidence(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros(0)
        proba = self.pipeline.predict_proba(list(texts))
        classes = [bool(c) for c in self.pipeline.classes_]
        return proba[:, classes.index(True)].astype(float) if True in classes else np.zeros(len(texts))

    def save(self, path: Path) -> Path:
        """skops format (no pickle): loadable with only the types this module trusts."""
        import skops.io

        skops.io.dump(
            {
                "pipeline": self.pipeline,
                "algorithm": self.algorithm,
                "trained_on": self.trained_on,
                "cheap_enough_share": self.cheap_enough_share,
            },
            path,
        )
        return path


def fit(policy: ClassifierPolicy, texts: Sequence[str], labels: np.ndarray) -> RequestClassifier:
    """The router's classifier, trained on every item."""
    y = np.asarray(labels, dtype=bool)
    if len(texts) != len(y) or not len(y):
        raise ValueError(f"{len(texts)} texts for {len(y)} labels: need one per item, at least one")
    pipeline = _pipeline(policy, y, len(y)).fit(list(texts), y)
    return RequestClassifier(pipeline, policy.algorithm, len(y), float(y.mean()))


def cross_fit(
    policy: ClassifierPolicy,
    texts: Sequence[str],
    labels: np.ndarray,
    clusters: np.ndarray | None = None,
) -> np.ndarray:
    """Out-of-fold P(cheap is enough) per item: each fold's items scored by a classifier trained on
    the other folds (whole clusters per fold when ``clusters`` is given; the folds' assignment is
    seeded by ``policy.seed``)."""
    from sklearn.model_selection import GroupKFold, KFold

    y = np.asarray(labels, dtype=bool)
    n = len(y)
    if len(texts) != n:
        raise ValueError(f"{len(texts)} texts for {n} labels")
    groups = None if clusters is None else np.unique(np.asarray(clusters), return_inverse=True)[1].reshape(-1)
    units = n if groups is None else int(groups.max()) + 1
    if units < 2:
        raise ValueError(
            f"cross-fitting needs at least 2 {'items' if groups is None else 'clusters'}, got {units}"
        )
    k = min(policy.folds, units)
    if groups is None:
        splits = KFold(n_splits=k, shuffle=True, random_state=policy.seed).split(np.zeros(n))
    else:
        splits = GroupKFold(n_splits=k, shuffle=True, random_state=policy.seed).split(
            np.zeros(n), groups=groups
        )
    out = np.empty(n)
    text_array = np.asarray(list(texts), dtype=object)
    for train, test in splits:
        model = fit(policy, list(text_array[train]), y[train])
        out[test] = model.confidence(list(text_array[test]))
    return out


_TRUSTED = [
    "sklearn.dummy.DummyClassifier",
    "sklearn.feature_extraction.text.TfidfTransformer",
    "sklearn.feature_extraction.text.TfidfVectorizer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.neighbors._classification.KNeighborsClassifier",
    "sklearn.pipeline.Pipeline",
    "numpy.dtype",
    "numpy.float64",
    "numpy.int64",
    "numpy.bool_",
    "builtins.bool",
    "builtins.float",
    "builtins.int",
    "builtins.str",
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.slice",
    "builtins.set",
    "scipy.sparse._csr.csr_matrix",
    "scipy.sparse._csr.csr_array",
]


def load(path: Path) -> RequestClassifier:
    """A classifier saved by :meth:`RequestClassifier.save`; refuses any type not in the list above."""
    import skops.io

    found = skops.io.get_untrusted_types(file=path)
    untrusted = [t for t in found if t not in _TRUSTED]
    if untrusted:
        raise ValueError(f"{path}: refusing to load types {untrusted} (not a router classifier)")
    data = skops.io.load(path, trusted=found)
    return RequestClassifier(
        data["pipeline"], data["algorithm"], int(data["trained_on"]), float(data["cheap_enough_share"])
    )
