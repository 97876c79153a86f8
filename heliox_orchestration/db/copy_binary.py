"""Hourly usage rows held in Arrow as PostgreSQL's binary COPY format.

The server spends a quarter of a text COPY parsing it (finding the fields, reading dates and
decimals); binary fields are read as they are. The rows are built a column at a time, in numpy
and pyarrow kernels, never a Python object per row: each field is its 4-byte length and its
bytes (length -1 for NULL), and ``binary_join_element_wise`` lays the fields of each row end to
end. Exactness is the same as the text path's: timestamps are whole microseconds, and money is
integer micro-dollars written as a numeric of scale 6 (base-10000 digits, no rounding anywhere).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
TRAILER = b"\xff\xff"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 UTC, PostgreSQL's timestamp zero
_NUMERIC_DIGITS = 6  # base-10000 digits: four before the point (|value| < 10**16), two after
_NUMERIC = np.dtype(
    [
        ("length", ">i4"),
        ("ndigits", ">i2"),
        ("weight", ">i2"),
        ("sign", ">u2"),
        ("dscale", ">i2"),
        ("digits", ">i2", _NUMERIC_DIGITS),
    ]
)
_NUMERIC_NEGATIVE = 0x4000


def records(values: np.ndarray) -> pa.Array:
    """A numpy array of fixed-width records as an Arrow binary array, one value per record."""
    values = np.ascontiguousarray(values)
    width = values.dtype.itemsize
    data = pa.py_buffer(values.view(np.uint8))
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, data]).cast(pa.binary())


def timestamp_fields(hours: pa.Array) -> np.ndarray:
    """Fields of a UTC timestamp[us] column without nulls."""
    fields = np.empty(len(hours), np.dtype([("length", ">i4"), ("value", ">i8")]))
    fields["length"] = 8
    fields["value"] = hours.cast(pa.int64()).to_numpy() - _PG_EPOCH_US
    return fields


def int4_fields(values: pa.Array) -> np.ndarray:
    """Fields of an integer column without nulls (each fits int4)."""
    fields = np.empty(len(values), np.dtype([("length", ">i4"), ("value", ">i4")]))
    fields["length"] = 4
    fields["value"] = values.to_numpy(zero_copy_only=False)
    return fields


def numeric_fields(units: np.ndarray, scale: int) -> np.ndarray:
    """Fields of a numeric column from integers counting 10**-scale (0 <= scale <= 8, |value| <
    10**16 units of one): exact, whatever the value."""
    units = np.asarray(units, dtype=np.int64)
    whole, fraction = np.divmod(np.abs(units).astype(np.uint64), np.uint64(10**scale))
    fraction *= np.uint64(10 ** (8 - scale))  # eight decimals: the two digits after the point
    fields = np.empty(len(units), _NUMERIC)
    fields["length"] = _NUMERIC.itemsize - 4
    fields["ndigits"] = _NUMERIC_DIGITS
    fields["weight"] = 3  # the first digit counts 10000**3; the server strips leading zeros
    fields["sign"] = np.where(units < 0, _NUMERIC_NEGATIVE, 0)
    fields["dscale"] = scale
    digits = fields["digits"]
    for k in range(4):
        whole, digit = np.divmod(whole, np.uint64(10_000))
        digits[:, 3 - k] = digit
    digits[:, 4], digits[:, 5] = np.divmod(fraction, np.uint64(10_000))
    return fields


def null_fields(rows: int) -> np.ndarray:
    return np.full(rows, -1, dtype=">i4")


def text_fields(column: pa.Array) -> list[pa.Array]:
    """(lengths, bytes) of a text column: NULL is length -1 and no bytes."""
    data = column.cast(pa.binary())
    lengths = pc.fill_null(pc.binary_length(data), -1).to_numpy(zero_copy_only=False)
    return [records(lengths.astype(">i4")), pc.fill_null(data, b"")]


def copy_data(rows: int, columns: int, fields: list[pa.Array]) -> Iterator[bytes]:
    """The COPY stream (header, rows, trailer) of ``rows`` rows of ``columns`` columns whose
    fields, in column order, are the binary arrays ``fields`` (as ``records`` and
    ``text_fields`` build them)."""
    yield HEADER
    if rows:
        count = records(np.full(rows, columns, dtype=">i2"))
        joined = pc.binary_join_element_wise(count, *fields, b"")
        yield joined.buffers()[2].to_pybytes()
    yield TRAILER


class CopyStream:
    """``copy_data`` as the file psycopg2's ``copy_expert`` reads: each ``read`` returns the next
    part whole (the caller asks for more than any part holds)."""

    def __init__(self, parts: Iterator[bytes]) -> None:
        self._parts = parts

    def read(self, _size: int = -1) -> bytes:
        return next(self._parts, b"")
