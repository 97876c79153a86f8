"""A column of text as the codes of its distinct values, the shape the FOCUS import validates.

An export repeats its values: a batch of rows names a few hours, categories, prices, instance
types and tag sets, and a few thousand resources. ``Coded`` keeps a column as ``values`` (its
distinct texts) and ``codes`` (row -> index into ``values``, -1 where missing), made by pyarrow's
``dictionary_encode`` for CSV, so each rule runs once per distinct text, in Python, with exactly
the semantics it has on a single value, and reaches every row through a numpy take. Memory is the
batch's codes plus its distinct values, never a Python object per row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class Coded:
    codes: np.ndarray  # int64 per row: index into values, -1 = missing
    values: list[Any]  # the distinct texts (str; a Parquet value may carry lone surrogates)

    @staticmethod
    def from_arrow(column: pa.Array | pa.ChunkedArray) -> Coded:
        encoded = pc.dictionary_encode(column)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        dictionary = encoded.dictionary
        if pa.types.is_binary(dictionary.type):  # checked as UTF-8 here, a distinct value at a time
            dictionary = dictionary.cast(pa.string())
        return Coded(codes, dictionary.to_pylist())

    @staticmethod
    def from_texts(texts: Any) -> Coded:
        codes, uniques = pd.factorize(pd.Series(np.asarray(texts, dtype=object), dtype=object))
        return Coded(codes.astype(np.int64), list(uniques))

    @staticmethod
    def missing(rows: int) -> Coded:
        return Coded(np.full(rows, -1, dtype=np.int64), [])

    def __len__(self) -> int:
        return len(self.codes)

    def isna(self) -> np.ndarray:
        return self.codes < 0

    def notna(self) -> np.ndarray:
        return self.codes >= 0

    def row(self, i: int) -> Any:
        """The text of row ``i`` (None where missing)."""
        code = int(self.codes[i])
        return None if code < 0 else self.values[code]

    def map(self, function: Callable[[Any], Any], missing: Any = None, dtype: Any = object) -> np.ndarray:
        """``function`` of each row's text (``missing`` where missing), computed once per value."""
        mapped = np.array([*(function(v) for v in self.values), missing], dtype=dtype)
        return mapped[self.codes]  # code -1 takes the last element: missing

    def take(self, rows: np.ndarray) -> Coded:
        return Coded(self.codes[rows], self.values)

    def coalesce(self, other: Coded) -> Coded:
        """Each row's text, else ``other``'s."""
        others = np.where(other.codes >= 0, other.codes + len(self.values), -1)
        codes = np.where(self.codes >= 0, self.codes, others)
        return Coded(codes, [*self.values, *other.values])

    def series(self) -> pd.Series:
        """The rows as an object Series (None where missing), for the few rules kept on pandas."""
        return pd.Series(self.map(lambda v: v), dtype=object)

    def arrow(self, rows: np.ndarray | None = None) -> pa.Array:
        """The texts of ``rows`` (default: all) as a pyarrow string array, null where missing."""
        codes = self.codes if rows is None else self.codes[rows]
        dictionary = pa.array(self.values, type=pa.string())
        indices = pa.array(codes, mask=codes < 0, type=pa.int64())
        return dictionary.take(indices)
