"""``Coded``: a column as the codes of its distinct texts, the shape the FOCUS import validates."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from heliox_orchestration.ingest.focus.coded import Coded


def test_arrow_chunks_share_one_dictionary() -> None:
    column = pa.chunked_array([pa.array(["a", None, "b"]), pa.array(["b", "c", "a"])])
    coded = Coded.from_arrow(column)
    assert [coded.row(i) for i in range(len(coded))] == ["a", None, "b", "b", "c", "a"]
    assert sorted(coded.values) == ["a", "b", "c"]
    assert coded.arrow().to_pylist() == column.to_pylist()


def test_texts_map_coalesce_and_take() -> None:
    effective = Coded.from_texts(["1.5", None, "2", None])
    billed = Coded.from_texts([None, "3", "4", None])
    cost = effective.coalesce(billed)
    assert [cost.row(i) for i in range(4)] == ["1.5", "3", "2", None]
    calls: list[str] = []

    def length(text: str) -> int:
        calls.append(text)
        return len(text)

    lengths = cost.map(length, missing=-1, dtype=np.int64)
    assert lengths.tolist() == [3, 1, 1, -1]
    assert sorted(calls) == sorted(cost.values)  # once per distinct value, never for a missing one
    assert cost.take(np.array([3, 0])).arrow().to_pylist() == [None, "1.5"]
    assert Coded.missing(2).isna().all()
