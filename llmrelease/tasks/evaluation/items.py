"""Per-item results kept small enough to grow: score columns in arrays, records in a file on disk.

A release streams its evalsets through generation, scoring and the guard in chunks. What must
stay in memory for the gates (one score per item per metric, paired by item id with the champion)
is held as one float array per metric with the item ids shared by every metric of an evalset; the
per-item records people read (output, reference, tokens, latency, verdicts) go to a JSONL spool on
disk and are streamed into MLflow's table format when the run is logged. At 100k rows the first is
a few megabytes; holding the records as Python dicts was ~2 KB a row.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ItemIds",
    "ScoreColumn",
    "Scores",
    "ScoreBuilder",
    "paired",
    "ItemSpool",
    "scores_to_json",
    "scores_from_json",
    "write_table",
    "records_table",
]


class ItemIds:
    """The item ids of one evalset, in row order; the id -> position index is built on first use."""

    __slots__ = ("ids", "__dict__")

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids

    @cached_property
    def index(self) -> dict[str, int]:
        return {item_id: n for n, item_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def sorted_order(self) -> np.ndarray:
        """Positions in sorted id order."""
        return np.array(sorted(range(len(self.ids)), key=self.ids.__getitem__), dtype=np.intp)


class ScoreColumn(Mapping[str, float]):
    """One metric's per-item scores as a read-only ``{item id: score}`` mapping backed by an array.

    It compares equal to a plain dict with the same items, so code and tests that read scores by
    id do not need to know how they are stored."""

    __slots__ = ("item_ids", "values")

    def __init__(self, item_ids: ItemIds, values: np.ndarray) -> None:
        if len(item_ids) != len(values):
            raise ValueError(f"{len(values)} scores for {len(item_ids)} items")
        self.item_ids = item_ids
        self.values = values

    def __getitem__(self, item_id: str) -> float:
        return float(self.values[self.item_ids.index[item_id]])

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.item_ids.index

    def __iter__(self) -> Iterator[str]:
        return iter(self.item_ids.ids)

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"ScoreColumn({len(self)} items, mean {self.mean():.4f})"

    def mean(self) -> float:
        return float(self.values.mean()) if len(self.values) else 0.0

    @classmethod
    def from_dict(cls, scores: Mapping[str, float]) -> ScoreColumn:
        return cls(ItemIds(list(scores)), np.fromiter(scores.values(), dtype=float, count=len(scores)))


def paired(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Both sides' scores on the items they share, in sorted id order (the order paired statistics
    resample in, so a verdict does not depend on row order). Columns over the same ids (a
    candidate and its champion on an unchanged evalset) pair without building any set."""
    a = a if isinstance(a, ScoreColumn) else ScoreColumn.from_dict(a)
    b = b if isinstance(b, ScoreColumn) else ScoreColumn.from_dict(b)
    if a.item_ids is b.item_ids or a.item_ids.ids == b.item_ids.ids:
        order = a.item_ids.sorted_order
        return a.values[order], b.values[order]
    common = sorted(a.item_ids.index.keys() & b.item_ids.index.keys())
    ia = np.fromiter((a.item_ids.index[i] for i in common), dtype=np.intp, count=len(common))
    ib = np.fromiter((b.item_ids.index[i] for i in common), dtype=np.intp, count=len(common))
    return a.values[ia], b.values[ib]


@dataclass
class Scores:
    """``items[metric]`` maps item id to a score in [0, 1]; ``aggregates[metric]`` is their mean.

    Metric names are ``<evalset>.<scorer>``."""

    items: dict[str, ScoreColumn] = field(default_factory=dict)
    aggregates: dict[str, float] = field(default_factory=dict)

    def merge(self, other: Scores) -> None:
        """Add ``other``'s metrics in place (while one evaluation builds its own scores)."""
        self.items.update(other.items)
        self.aggregates.update(other.aggregates)

    def merged(self, other: Scores) -> Scores:
        """A new Scores with both sets of metrics: steps add to a finished evaluation this way,
        never by changing the one they were given (columns are read-only and shared)."""
        return Scores({**self.items, **other.items}, {**self.aggregates, **other.aggregates})


class ScoreBuilder:
    """Collects one evalset's scores chunk by chunk; :meth:`build` joins them into columns."""

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._parts: dict[str, list[np.ndarray]] = {}
        self.item_ids = ItemIds(self._ids)
        """The ids as built (the shared ones when :meth:`build` reused them)."""

    def add(self, ids: list[str], values: Mapping[str, Iterable[float]]) -> None:
        start = len(self._ids)
        self._ids.extend(ids)
        for metric, chunk in values.items():
            arr = np.fromiter(chunk, dtype=float)
            if len(arr) != len(ids):
                raise ValueError(f"{metric}: {len(arr)} scores for {len(ids)} items")
            parts = self._parts.setdefault(metric, [])
            if sum(len(p) for p in parts) != start:
                raise ValueError(f"{metric}: scores are missing for earlier items")
            parts.append(arr)

    def build(self, share: ItemIds | None = None) -> Scores:
        """The columns; ``share``: ids already held for the same items (the evaluation's), reused
        when they are the same so a second copy of every id string is not kept."""
        if share is not None and share.ids == self._ids:
            self.item_ids = share
        scores = Scores()
        for metric, parts in self._parts.items():
            column = ScoreColumn(self.item_ids, np.concatenate(parts) if parts else np.zeros(0))
            scores.items[metric] = column
            scores.aggregates[metric] = column.mean()
        return scores


def scores_to_json(items: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """The ``item_scores.json`` artifact: one group per evalset, its item ids once and each metric's
    scores as a list in the same order (a fraction of the memory and bytes of one JSON object per
    item and metric). Integral scores are written as integers, so the common 0/1 scores load as
    Python's shared small ints."""
    groups: dict[int, dict[str, Any]] = {}
    for metric, column in items.items():
        if not isinstance(column, ScoreColumn):
            column = ScoreColumn.from_dict(column)
        group = groups.setdefault(id(column.item_ids), {"ids": column.item_ids.ids, "scores": {}})
        group["scores"][metric] = [int(v) if float(v).is_integer() else float(v) for v in column.values]
    return {"format": "columns", "groups": list(groups.values())}


def scores_from_json(obj: Mapping[str, Any]) -> dict[str, ScoreColumn]:
    """Read ``item_scores.json`` in either format: groups of columns (current) or
    ``{metric: {item id: score}}`` (releases made before columns)."""
    if obj.get("format") != "columns":
        return {metric: ScoreColumn.from_dict(scores) for metric, scores in obj.items()}
    out: dict[str, ScoreColumn] = {}
    for group in obj["groups"]:
        item_ids = ItemIds(group["ids"])
        for metric, values in group["scores"].items():
            out[metric] = ScoreColumn(item_ids, np.asarray(values, dtype=float))
    return out


class ItemSpool:
    """Per-item records (one JSON object per line) in a temporary file, in evalset row order.

    Appended chunk by chunk while generating, read back chunk by chunk (the guard adds its verdicts
    with :meth:`update`), and written as an MLflow table without ever being in memory at once. The
    file goes away with the object."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="llmrelease-items-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self.path = self._dir / "items.jsonl"
        self.path.touch()
        self.columns: dict[str, None] = {}
        """Every key seen, in first-seen order: the table's columns."""
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            for record in records:
                self.columns.update(dict.fromkeys(record))
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                self._count += 1

    def chunks(self, size: int) -> Iterator[list[dict[str, Any]]]:
        chunk: list[dict[str, Any]] = []
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                chunk.append(json.loads(line))
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    def update(self, size: int, fields: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
        """Rewrite the spool chunk by chunk, merging ``fields(chunk)[i]`` into the chunk's i-th record."""
        tmp = self.path.with_suffix(".new")
        with tmp.open("w", encoding="utf-8") as out:
            for chunk in self.chunks(size):
                extra = fields(chunk)
                if len(extra) != len(chunk):
                    raise ValueError(f"{len(extra)} updates for {len(chunk)} records")
                for record, more in zip(chunk, extra, strict=True):
                    record.update(more)
                    self.columns.update(dict.fromkeys(more))
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, self.path)

    def write_table(self, dest: Path) -> None:
        write_table(dest, list(self.columns), self.chunks(4096))


def write_table(dest: Path, columns: list[str], chunks: Iterable[list[Mapping[str, Any]]]) -> None:
    """Write records as MLflow's table artifact (pandas' ``split`` JSON: columns, then one list per
    row), streaming; ``mlflow.load_table`` and the UI's evaluation view read it."""
    with dest.open("w", encoding="utf-8") as fh:
        fh.write('{"columns":' + json.dumps(columns, ensure_ascii=False) + ',"data":[')
        first = True
        for chunk in chunks:
            for record in chunk:
                fh.write(
                    ("" if first else ",") + json.dumps([record.get(c) for c in columns], ensure_ascii=False)
                )
                first = False
        fh.write("]}")


def records_table(
    records: list[Mapping[str, Any]], columns: list[str] | None = None
) -> Callable[[Path], None]:
    """A table writer for records already in memory (small tables: shadow requests, drift rows);
    the columns are every key seen, in first-seen order, unless given."""
    if columns is None:
        seen: dict[str, None] = {}
        for record in records:
            seen.update(dict.fromkeys(record))
        columns = list(seen)
    cols = columns
    return lambda dest: write_table(dest, cols, [records])
