"""The learned router's classifier, pure: labels, out-of-fold predictions that cannot see their own
label (nor a twin in the same cluster), the cost of routing before any call, and the saved form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmrelease.specs import ClassifierPolicy
from llmrelease.tasks.routing.cascade import RouteItems, apgr, operating_point, sweep
from llmrelease.tasks.routing.classifier import cheap_enough, cross_fit, fit, load, request_text

WORDS = ["refund", "invoice", "password", "login", "crash", "bug", "shipping", "delivery", "order", "screen"]


def policy(**kw) -> ClassifierPolicy:
    return ClassifierPolicy(kind="classifier", target_strong_share=0.3, **kw)


def texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, 4)) + f" ticket {i}" for i in range(n)]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def test_request_text_is_the_variables_values_in_name_order() -> None:
    assert request_text({"ticket": "b", "customer": "a"}) == "a\nb"


def test_label_is_cheap_at_least_as_good_and_a_tie_goes_to_the_cheap_route() -> None:
    assert cheap_enough(np.array([1, 0, 1, 0.5]), np.array([0, 1, 1, 0.5])).tolist() == [
        True,
        False,
        True,
        True,
    ]


@pytest.mark.parametrize("algorithm", ["logistic_regression", "knn"])
def test_a_learnable_signal_is_learned_out_of_fold(algorithm: str) -> None:
    xs = texts(200, 1)
    labels = np.array(["password" not in t and "login" not in t for t in xs])
    oof = cross_fit(policy(algorithm=algorithm), xs, labels)
    assert auc(oof, labels) > 0.8


def test_out_of_fold_predictions_do_not_flatter_a_router_on_noise() -> None:
    """On labels that are pure noise, a 1-nearest-neighbour classifier scored on its own training
    items recalls every label (APGR near 1); out-of-fold it is a coin (near 0.5). The release judges
    the out-of-fold one."""
    rng = np.random.default_rng(7)
    n = 300
    xs = texts(n, 2)
    cheap_q = (rng.random(n) < 0.4).astype(float)
    strong_q = (rng.random(n) < 0.7).astype(float)  # better on average, item by item a coin
    labels = cheap_enough(cheap_q, strong_q)
    p = policy(algorithm="knn", neighbours=1)

    def router_apgr(conf: np.ndarray) -> float:
        items = RouteItems(
            [str(i) for i in range(n)], cheap_q, strong_q, np.ones(n), np.full(n, 3.0), conf, pays_both=False
        )
        return float(apgr(sweep(items))[0])

    in_sample = router_apgr(fit(p, xs, labels).confidence(xs))
    out_of_fold = router_apgr(cross_fit(p, xs, labels))
    assert in_sample > 0.9
    assert abs(out_of_fold - 0.5) < 0.15


def test_folds_keep_clusters_whole() -> None:
    """Four identical tickets per cluster with one noise label each: split across folds, a twin in
    training would give every item its label away; kept whole, nothing is learned."""
    rng = np.random.default_rng(3)
    base = texts(60, 4)
    xs = [t for t in base for _ in range(4)]
    clusters = np.repeat(np.arange(60), 4)
    labels = np.repeat(rng.integers(0, 2, 60).astype(bool), 4)
    p = policy(algorithm="knn", neighbours=1)
    assert auc(cross_fit(p, xs, labels), labels) > 0.95  # items split from their twins: leaked
    assert auc(cross_fit(p, xs, labels, clusters), labels) < 0.75


def test_one_class_predicts_its_share_and_too_few_items_are_refused() -> None:
    xs = texts(10, 5)
    assert fit(policy(), xs, np.ones(10, bool)).confidence(xs).tolist() == [1.0] * 10
    assert fit(policy(), xs, np.zeros(10, bool)).confidence(xs).tolist() == [0.0] * 10
    with pytest.raises(ValueError, match="at least 2 clusters"):
        cross_fit(policy(), xs, np.ones(10, bool), np.zeros(10))


def test_a_request_sent_to_the_strong_route_pays_for_one_call() -> None:
    items = dict(
        ids=["a", "b"],
        cheap_quality=np.array([1.0, 0.0]),
        strong_quality=np.array([1.0, 1.0]),
        cheap_cost=np.array([1.0, 1.0]),
        strong_cost=np.array([3.0, 3.0]),
        confidence=np.array([0.9, 0.1]),
    )
    escalate = np.array([False, True])
    assert operating_point(RouteItems(**items), escalate).cost[0] == pytest.approx(2.5)  # cascade: 1, 1+3
    classifier = RouteItems(**items, pays_both=False)
    op = operating_point(classifier, escalate)
    assert op.cost[0] == pytest.approx(2.0)  # 1, 3
    assert op.random_share[0] == pytest.approx(0.5)  # a random router at that cost: half to strong
    assert sweep(classifier).cost[0].tolist() == pytest.approx([1.0, 2.0, 3.0])
    assert sweep(RouteItems(**items)).cost[0].tolist() == pytest.approx([1.0, 2.5, 4.0])


@pytest.mark.parametrize("algorithm", ["logistic_regression", "knn"])
def test_saved_classifier_loads_back_and_predicts_the_same(tmp_path: Path, algorithm: str) -> None:
    xs = texts(50, 6)
    labels = np.array(["bug" not in t for t in xs])
    model = fit(policy(algorithm=algorithm), xs, labels)
    loaded = load(model.save(tmp_path / "classifier.skops"))
    assert np.allclose(loaded.confidence(xs), model.confidence(xs))
    assert (loaded.algorithm, loaded.trained_on) == (algorithm, 50)


def test_a_file_with_other_types_is_refused(tmp_path: Path) -> None:
    import skops.io
    from sklearn.tree import DecisionTreeClassifier

    tree = DecisionTreeClassifier().fit([[0], [1]], [0, 1])
    path = tmp_path / "other.skops"
    skops.io.dump({"pipeline": tree, "algorithm": "x", "trained_on": 2, "cheap_enough_share": 0.5}, path)
    with pytest.raises(ValueError, match="refusing to load"):
        load(path)
