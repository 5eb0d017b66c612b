"""Per-item results: score columns, the item_scores.json format (old and new), the on-disk spool and
the MLflow table it becomes. Pure logic and local files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmrelease.tasks.evaluation.items import (
    ItemSpool,
    ScoreBuilder,
    ScoreColumn,
    records_table,
    scores_from_json,
    scores_to_json,
)


def test_a_score_column_reads_like_the_dict_it_replaces() -> None:
    col = ScoreColumn.from_dict({"a": 1.0, "b": 0.0, "c": 0.5})
    assert col == {"a": 1.0, "b": 0.0, "c": 0.5}
    assert col["c"] == 0.5 and "b" in col and "z" not in col and len(col) == 3
    assert list(col) == ["a", "b", "c"]
    assert col.mean() == pytest.approx(0.5)
    with pytest.raises(KeyError):
        col["z"]


def test_chunks_build_the_same_columns_as_one_pass() -> None:
    ids = [f"i{n}" for n in range(7)]
    acc = [float(n % 2) for n in range(7)]
    rouge = [n / 10 for n in range(7)]
    whole = ScoreBuilder()
    whole.add(ids, {"s.acc": acc, "s.rouge": rouge})
    parts = ScoreBuilder()
    for start in range(0, 7, 3):
        parts.add(
            ids[start : start + 3], {"s.acc": acc[start : start + 3], "s.rouge": rouge[start : start + 3]}
        )
    a, b = whole.build(), parts.build()
    assert a.items == b.items and a.aggregates == pytest.approx(b.aggregates)
    assert b.aggregates["s.acc"] == pytest.approx(3 / 7)
    # Every metric of an evalset shares one list of ids.
    assert b.items["s.acc"].item_ids is b.items["s.rouge"].item_ids


def test_a_builder_rejects_misaligned_chunks() -> None:
    builder = ScoreBuilder()
    with pytest.raises(ValueError, match="2 scores for 3 items"):
        builder.add(["a", "b", "c"], {"m": [1.0, 0.0]})
    builder = ScoreBuilder()
    builder.add(["a"], {"m": [1.0]})
    with pytest.raises(ValueError, match="missing for earlier items"):
        builder.add(["b"], {"n": [1.0]})


def test_build_reuses_ids_already_held_for_the_same_items() -> None:
    first = ScoreBuilder()
    first.add(["a", "b"], {"x.m": [1.0, 0.0]})
    held = first.build().items["x.m"].item_ids
    second = ScoreBuilder()
    second.add(["a", "b"], {"x.g": [0.0, 0.0]})
    assert second.build(held).items["x.g"].item_ids is held
    other = ScoreBuilder()
    other.add(["b", "a"], {"x.g": [0.0, 0.0]})
    assert other.build(held).items["x.g"].item_ids is not held  # other order: not the same items


def test_item_scores_json_round_trips_and_stores_ids_once_per_evalset() -> None:
    builder = ScoreBuilder()
    builder.add(["a", "b", "c"], {"t.acc": [1.0, 0.0, 1.0], "t.rouge": [0.25, 1.0, 0.0]})
    other = ScoreBuilder()
    other.add(["r1"], {"red.guard": [1.0]})
    items = {**builder.build().items, **other.build().items}
    stored = json.loads(json.dumps(scores_to_json(items)))
    assert stored["format"] == "columns" and len(stored["groups"]) == 2
    assert stored["groups"][0] == {
        "ids": ["a", "b", "c"],
        "scores": {"t.acc": [1, 0, 1], "t.rouge": [0.25, 1, 0]},
    }
    back = scores_from_json(stored)
    assert back == items
    assert back["t.acc"].item_ids is back["t.rouge"].item_ids


def test_item_scores_written_before_columns_still_load() -> None:
    old = {"t.acc": {"a": 1.0, "b": 0.0}, "t.rouge": {"a": 0.5, "b": 0.25}}
    back = scores_from_json(old)
    assert back == old
    assert isinstance(back["t.acc"].values, np.ndarray)


def test_the_spool_keeps_order_and_takes_updates_in_chunks(tmp_path: Path) -> None:
    spool = ItemSpool()
    spool.append({"evalset": "t", "id": f"i{n}", "output": f"o{n}"} for n in range(5))
    spool.append([{"evalset": "r", "id": "x", "output": "é", "extra": 1}])
    assert len(spool) == 6
    assert [len(c) for c in spool.chunks(4)] == [4, 2]
    spool.update(4, lambda chunk: [{"guard": r["id"].upper()} for r in chunk])
    records = [r for c in spool.chunks(100) for r in c]
    assert [r["guard"] for r in records] == ["I0", "I1", "I2", "I3", "I4", "X"]
    assert list(spool.columns) == ["evalset", "id", "output", "extra", "guard"]
    with pytest.raises(ValueError, match="1 updates for 4 records"):
        spool.update(4, lambda chunk: [{}])
    # The failed update left the spool as it was.
    assert [r["guard"] for c in spool.chunks(100) for r in c] == ["I0", "I1", "I2", "I3", "I4", "X"]


def test_the_spool_file_goes_away_with_the_object() -> None:
    spool = ItemSpool()
    spool.append([{"id": "a"}])
    path = spool.path
    assert path.exists()
    del spool
    assert not path.exists()


def test_tables_are_what_mlflow_and_pandas_read(tmp_path: Path) -> None:
    import pandas as pd

    spool = ItemSpool()
    spool.append([{"id": "a", "output": 'say "hi"\n', "score": 1.0}, {"id": "b", "ttft_s": None}])
    dest = tmp_path / "items.json"
    spool.write_table(dest)
    df = pd.read_json(dest, orient="split")  # what mlflow.load_table does
    assert list(df.columns) == ["id", "output", "score", "ttft_s"]
    assert df["output"][0] == 'say "hi"\n' and df["score"][0] == 1.0 and pd.isna(df["score"][1])

    empty = tmp_path / "rows.json"
    records_table([], ["metric"])(empty)
    assert json.loads(empty.read_text()) == {"columns": ["metric"], "data": []}


def test_pairing_uses_shared_items_in_sorted_id_order() -> None:
    from llmrelease.tasks.evaluation.items import paired

    cand = ScoreColumn.from_dict({"b": 1.0, "a": 0.0, "c": 0.5})
    same_ids = ScoreColumn(cand.item_ids, np.array([0.0, 1.0, 0.5]))
    x, y = paired(cand, same_ids)
    assert x.tolist() == [0.0, 1.0, 0.5] and y.tolist() == [1.0, 0.0, 0.5]  # a, b, c
    # Other order and only partly the same items (a plain dict works too): the shared ones, sorted.
    x, y = paired(cand, {"c": 0.0, "a": 1.0, "z": 1.0})
    assert x.tolist() == [0.0, 0.5] and y.tolist() == [1.0, 0.0]  # a, c
    x, y = paired(cand, {})
    assert len(x) == len(y) == 0
