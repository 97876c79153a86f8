"""Reading FOCUS exports and utilization samples a batch at a time with pyarrow's streaming
readers: CSV (plain or gzip, detected by content) through ``pyarrow.csv.open_csv`` and Parquet
through ``ParquetFile.iter_batches``. Both arrive as text with ``_line``, the number of the
record (the Parquet row), so that both formats share one validation. Memory follows the batch
(``CSV_BLOCK_BYTES`` of CSV, ``chunk_rows`` rows), never the file.

CSV values are read as strings, never inferred, so validation sees exactly what the file says.
Only the chosen columns are converted (an export has 50 or more). A quoted value may span
lines, so the line of a CSV record is found only when an error names it: ``located`` scans the
file with Python's csv module up to that record. Blank lines are skipped, as are records whose
every chosen field is empty. When pyarrow refuses a file (a record with the wrong number of
fields, bytes that are not UTF-8, a corrupt gzip stream), the scan names the line."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from heliox_orchestration.ingest.focus.coded import Coded
from heliox_orchestration.ingest.focus.validation import ImportInputError

DEFAULT_CHUNK_ROWS = 50_000
CSV_BLOCK_BYTES = 4 << 20  # pyarrow parses this much CSV per batch (peak memory grows with it)
PARQUET_BUFFER_BYTES = 8 << 20
NULL_TEXTS = frozenset({"", "NULL"})  # the FOCUS sample writes empty values as NULL

# (file, its size in bytes) -> a context whose value is called with each number of bytes read.
# The command line passes its progress bar (``cli.progress_bar``); nothing here draws one.
ProgressFactory = Callable[[Path, int], AbstractContextManager[Callable[[int], None]]]
ColumnChooser = Callable[[list[str]], dict[str, int]]


@contextmanager
def _open_binary(path: Path) -> Iterator[BinaryIO]:
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise ImportInputError(path, f"cannot be read ({exc.strerror or exc})") from None
    with raw:
        yield raw


def _decompressed(raw: BinaryIO) -> BinaryIO | gzip.GzipFile:
    """The file's bytes, gunzipped when it starts with the gzip magic number (whatever its name)."""
    magic = raw.read(2)
    raw.seek(0)
    return gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw


def _magic(path: Path) -> bytes:
    with _open_binary(path) as raw:
        return raw.read(4)


# --- CSV -----------------------------------------------------------------------------------------


def _csv_header(path: Path) -> tuple[list[str], bool]:
    """The header's names, and whether anything follows."""
    with _open_binary(path) as raw:
        text = io.TextIOWrapper(_decompressed(raw), encoding="utf-8-sig", newline="")
        reader = csv.reader(text)
        try:
            header = next(reader, None)
        except (csv.Error, UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error):
            header = []  # the scan below names the problem
            _locate_csv_failure(path, None)
        if not header:
            raise ImportInputError(path, "is empty: expected a CSV header row", line=1)
        try:
            more = next(reader, None) is not None
        except (csv.Error, UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error):
            more = True  # pyarrow's read fails too, and the scan names the line
        return header, more


def _csv_batches(
    path: Path, choose_columns: ColumnChooser, chunk_rows: int, progress: Callable[[int], None]
) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """Tables of at most ``chunk_rows`` records holding the chosen columns as text (null for
    empty or NULL), with each record's number (``located`` turns it into its line). Plain or gzip."""
    header, more = _csv_header(path)
    picks = choose_columns([h.strip() for h in header])
    if not more:  # a header alone (pyarrow cannot skip a last line without a line break)
        return
    names, positions = list(picks), list(picks.values())
    # Positional names: a header may repeat a name; the chooser has picked the first.
    labels = [f"c{i}" for i in range(len(header))]
    options = (
        pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES, skip_rows=1, column_names=labels),
        pa_csv.ParseOptions(newlines_in_values=True, ignore_empty_lines=True),
        pa_csv.ConvertOptions(
            # Bytes: UTF-8 is checked once per distinct value (``_utf8_checked``), not once per field.
            column_types={labels[i]: pa.binary() for i in positions},
            include_columns=[labels[i] for i in positions],  # the other columns are not converted
            null_values=sorted(NULL_TEXTS),
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    raw = pa.OSFile(str(path))
    stream = pa.CompressedInputStream(raw, "gzip") if _magic(path)[:2] == b"\x1f\x8b" else raw
    record, reported = 1, 0
    # pyarrow parses CSV_BLOCK_BYTES at a time (a few thousand records); validation pays a fixed
    # cost per chunk, so the blocks are gathered into chunks of ``chunk_rows``.
    held: list[pa.RecordBatch] = []
    held_records: list[np.ndarray] = []
    try:
        with raw, stream:
            for batch in pa_csv.open_csv(stream, *options):
                records = np.arange(record, record + batch.num_rows)
                record += batch.num_rows
                # A record whose every field read is empty carries nothing to import: skipped,
                # like a blank line.
                filled = np.zeros(batch.num_rows, dtype=bool)
                if all(column.null_count for column in batch.columns):  # else none is all null
                    for column in batch.columns:
                        filled |= column.is_valid().to_numpy(zero_copy_only=False)
                else:
                    filled[:] = True
                picked = batch.rename_columns(names)
                if not filled.all():
                    picked = picked.filter(pa.array(filled))
                    records = records[filled]
                held.append(picked)
                held_records.append(records)
                if sum(b.num_rows for b in held) >= chunk_rows:
                    # A table of the blocks, not a copy of them.
                    chunk, numbers = pa.Table.from_batches(held), np.concatenate(held_records)
                    whole = chunk.num_rows - chunk.num_rows % chunk_rows
                    for first in range(0, whole, chunk_rows):
                        yield chunk.slice(first, chunk_rows), numbers[first : first + chunk_rows]
                    held, held_records = chunk.slice(whole).to_batches(), [numbers[whole:]]
                progress(raw.tell() - reported)
                reported = raw.tell()
            if held and sum(b.num_rows for b in held):
                yield pa.Table.from_batches(held), np.concatenate(held_records)
    except (pa.ArrowException, OSError, EOFError) as exc:
        _locate_csv_failure(path, len(header))
        raise ImportInputError(path, f"could not be read as CSV ({exc})", record=record) from None


def record_line(path: Path, record: int) -> int | None:
    """The line CSV record number ``record`` starts on (records counted as ``_csv_batches``
    counts them: blank lines not), by a scan of the file with Python's csv module."""
    with _open_binary(path) as raw:
        text = io.TextIOWrapper(_decompressed(raw), encoding="utf-8-sig", newline="")
        reader = csv.reader(text)
        try:
            next(reader, None)  # the header
            seen = 0
            start = reader.line_num + 1
            for fields in reader:
                if fields:
                    seen += 1
                    if seen == record:
                        return start
                start = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error):
            pass
    return None


@contextmanager
def located(path: Path) -> Iterator[None]:
    """Errors raised inside name the line of the CSV record they name."""
    try:
        yield
    except ImportInputError as exc:
        if exc.record is None:
            raise
        raise exc.at_line(record_line(path, exc.record)) from None


def _csv_chunks(
    path: Path, choose_columns: ColumnChooser, chunk_rows: int, progress: Callable[[int], None]
) -> Iterator[pd.DataFrame]:
    """Frames of the chosen columns as text (None for empty or NULL) and ``_line``."""
    for batch, lines in _csv_batches(path, choose_columns, chunk_rows, progress):
        with _utf8_checked(path, lines):
            texts = [column.cast(pa.string()) for column in batch.columns]
        frame = pa.Table.from_arrays(texts, names=batch.schema.names).to_pandas()
        frame["_line"] = lines
        yield frame


@contextmanager
def _utf8_checked(path: Path, records: np.ndarray) -> Iterator[None]:
    """Bytes read from a CSV file made text: bytes that are not UTF-8 are refused with their line."""
    try:
        yield
    except pa.ArrowInvalid:
        _locate_csv_failure(path, None)
        raise ImportInputError(path, "is not UTF-8 text", record=int(records[0])) from None


def _locate_csv_failure(path: Path, width: int | None) -> None:
    """Scan the file with Python's csv module and raise the error of the first bad record,
    naming its line; returns if it finds none. ``width`` is the header's number of fields."""
    with _open_binary(path) as raw:
        text = io.TextIOWrapper(_decompressed(raw), encoding="utf-8-sig", newline="")
        reader = csv.reader(text)
        line = 1
        try:
            for record in reader:
                if width is None:
                    width = len(record)
                elif record and len(record) != width:
                    message = f"has {len(record)} fields, the header has {width}"
                    raise ImportInputError(path, message, line=line)
                line = reader.line_num + 1
        except csv.Error as exc:
            raise ImportInputError(path, f"is not valid CSV ({exc})", line=line) from None
        except UnicodeDecodeError:
            # The decoder reads ahead in blocks: find the line of the bad bytes itself.
            raise ImportInputError(path, "is not UTF-8 text", line=_first_undecodable_line(path)) from None
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise ImportInputError(path, f"is a truncated or corrupt gzip file ({exc})", line=line) from None


def _first_undecodable_line(path: Path) -> int | None:
    with _open_binary(path) as raw:
        try:
            for number, data in enumerate(_decompressed(raw), start=1):
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    return number
        except (EOFError, gzip.BadGzipFile, zlib.error):
            pass
    return None


# --- Parquet -------------------------------------------------------------------------------------


def _parquet_texts(
    path: Path, choose_columns: ColumnChooser, chunk_rows: int, progress: Callable[[int], None]
) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """Values are turned into the text a CSV export holds, so both formats share one
    validation; the "line" of a value is its row number (errors say "row")."""
    try:
        # Buffered reads: a column chunk is streamed, not loaded whole; pyarrow decodes a batch at a time.
        parquet = pq.ParquetFile(path, buffer_size=PARQUET_BUFFER_BYTES)
    except (pa.ArrowException, OSError) as exc:
        raise ImportInputError(path, f"is not a readable Parquet file ({exc})") from None
    header = list(parquet.schema_arrow.names)
    picks = choose_columns(header)
    size, total = path.stat().st_size, max(1, parquet.metadata.num_rows)
    first = 1
    try:
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=[header[i] for i in picks.values()]):
            texts = {name: _parquet_column_text(batch.column(i)) for i, name in enumerate(picks)}
            yield texts, np.arange(first, first + batch.num_rows)
            first += batch.num_rows
            progress(int(size * batch.num_rows / total))
    except (pa.ArrowException, OSError) as exc:
        raise ImportInputError(path, f"is not a readable Parquet file ({exc})", row=first) from None


def _parquet_chunks(
    path: Path, choose_columns: ColumnChooser, chunk_rows: int, progress: Callable[[int], None]
) -> Iterator[pd.DataFrame]:
    for texts, lines in _parquet_texts(path, choose_columns, chunk_rows, progress):
        frame = pd.DataFrame(texts, dtype=object)
        frame["_line"] = lines
        yield frame


def _parquet_column_text(column: pa.Array) -> list[str | None] | np.ndarray:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        blank = pc.fill_null(pc.is_in(column, value_set=pa.array(sorted(NULL_TEXTS))), False)
        kept = pc.if_else(blank, pa.scalar(None, column.type), column)
        return kept.to_numpy(zero_copy_only=False)
    return parquet_text(column.to_pylist())


def parquet_text(values: list[Any]) -> list[str | None]:
    """Parquet values (as pyarrow's ``to_pylist`` gives them) as the text a CSV export holds.
    Null is None, and so are the texts a CSV reads as empty; a float NaN or infinity is a value
    ("nan", "inf"), refused wherever a number is needed; bytes that are not UTF-8 keep their bad
    bytes as lone surrogates, which the text checks refuse."""
    texts = [None if value is None else _as_text(value) for value in values]
    return [None if text in NULL_TEXTS else text for text in texts]


def _as_text(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    if isinstance(value, list | tuple):  # a Parquet map arrives as (key, value) pairs
        try:
            return json.dumps(dict(value), default=str)
        except (TypeError, ValueError):
            return json.dumps(value, default=str)
    return str(value)


def chunks(
    path: Path, choose_columns: ColumnChooser, chunk_rows: int, progress: ProgressFactory | None
) -> Iterator[tuple[pd.DataFrame, bool]]:
    """(frame, is_parquet) chunks of either format; ``progress`` hears of the bytes read."""
    path = Path(path)
    if path.is_dir():
        raise ImportInputError(path, "is a folder, not a file")
    parquet = _magic(path) == b"PAR1"
    reader = _parquet_chunks if parquet else _csv_chunks
    size = path.stat().st_size
    bar: AbstractContextManager[Callable[[int], None]] = (
        progress(path, size) if progress else nullcontext(lambda _n: None)
    )
    with bar as update:
        for frame in reader(path, choose_columns, chunk_rows, update):
            yield frame, parquet


def coded_chunks(
    path: Path, choose_columns: ColumnChooser, chunk_rows: int, progress: ProgressFactory | None
) -> Iterator[tuple[dict[str, Coded], np.ndarray, bool]]:
    """(columns, lines, is_parquet) chunks of either format, each chosen column as the codes of
    its distinct texts (``Coded``): what the FOCUS import validates a distinct value at a time."""
    path = Path(path)
    if path.is_dir():
        raise ImportInputError(path, "is a folder, not a file")
    parquet = _magic(path) == b"PAR1"
    size = path.stat().st_size
    bar: AbstractContextManager[Callable[[int], None]] = (
        progress(path, size) if progress else nullcontext(lambda _n: None)
    )
    with bar as update:
        if parquet:
            for texts, lines in _parquet_texts(path, choose_columns, chunk_rows, update):
                yield {name: Coded.from_texts(values) for name, values in texts.items()}, lines, True
        else:
            for batch, lines in _csv_batches(path, choose_columns, chunk_rows, update):
                with _utf8_checked(path, lines):
                    columns = {name: Coded.from_arrow(batch.column(name)) for name in batch.schema.names}
                yield columns, lines, False


def column_picker(path: Path, wanted: Callable[[dict[str, str]], list[str]]) -> ColumnChooser:
    """Header -> {canonical name: position}. Names match case-insensitively; ``wanted`` gets
    {lower-case name: name as written} and returns the canonical names to read, or raises."""

    def choose(header: list[str]) -> dict[str, int]:
        positions: dict[str, int] = {}
        for i, name in enumerate(header):
            positions.setdefault(name.lower(), i)
        present = {name.lower(): name for name in reversed(header)}
        return {name: positions[name.lower()] for name in wanted(present) if name.lower() in positions}

    return choose
