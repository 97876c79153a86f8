"""Reading FOCUS exports and utilization samples, a chunk of rows at a time: CSV (plain or gzip,
detected by content) and Parquet (when pyarrow is importable), both as text with ``_line``, the
line (or Parquet row) each record starts on, so that both formats share one validation."""

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

from heliox_orchestration.ingest.focus.validation import ImportInputError

DEFAULT_CHUNK_ROWS = 50_000
NULL_TEXTS = frozenset({"", "NULL"})  # the FOCUS sample writes empty values as NULL

# (file, its size in bytes) -> a context whose value is called with each number of bytes read.
# The command line passes its progress bar (``cli.progress_bar``); nothing here draws one.
ProgressFactory = Callable[[Path, int], AbstractContextManager[Callable[[int], None]]]


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


def _is_parquet(path: Path) -> bool:
    with _open_binary(path) as raw:
        return raw.read(4) == b"PAR1"


def _csv_chunks(
    path: Path,
    choose_columns: Callable[[list[str]], dict[str, int]],
    chunk_rows: int,
    progress: Callable[[int], None],
) -> Iterator[pd.DataFrame]:
    """Frames of at most ``chunk_rows`` records holding the chosen columns as text (None for
    empty or NULL) and ``_line``, the physical line each record starts on. Plain or gzip."""
    with _open_binary(path) as raw:
        text = io.TextIOWrapper(_decompressed(raw), encoding="utf-8-sig", newline="")
        reader = csv.reader(text)
        line = 1
        reported = 0
        try:
            header = next(reader, None)
            if header is None:
                raise ImportInputError(path, "is empty: expected a CSV header row", line=1)
            picks = choose_columns([h.strip() for h in header])
            names, positions, width = list(picks), list(picks.values()), len(header)
            rows: list[list[str | None]] = []
            lines: list[int] = []
            line = reader.line_num + 1
            for record in reader:
                if record:
                    if len(record) != width:
                        raise ImportInputError(
                            path, f"has {len(record)} fields, the header has {width}", line=line
                        )
                    rows.append([None if record[i] in NULL_TEXTS else record[i] for i in positions])
                    lines.append(line)
                line = reader.line_num + 1
                if len(rows) >= chunk_rows:
                    yield pd.DataFrame(rows, columns=names).assign(_line=lines)
                    rows, lines = [], []
                    progress(raw.tell() - reported)
                    reported = raw.tell()
            if rows:
                yield pd.DataFrame(rows, columns=names).assign(_line=lines)
            progress(raw.tell() - reported)
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


def _parquet_chunks(
    path: Path,
    choose_columns: Callable[[list[str]], dict[str, int]],
    chunk_rows: int,
    progress: Callable[[int], None],
) -> Iterator[pd.DataFrame]:
    """Parquet, read only when pyarrow is importable: Heliox does not depend on it. Values are
    turned into the text a CSV export holds, so both formats share one validation; ``_line``
    is the row number (errors say "row")."""
    try:
        import pyarrow.parquet as pq  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise ImportInputError(
            path,
            "is a Parquet file, and reading Parquet needs pyarrow, which Heliox does not depend on: "
            "install it (pip install pyarrow) or export the data as CSV (plain or .gz)",
        ) from None
    parquet = pq.ParquetFile(path)
    picks = choose_columns(list(parquet.schema_arrow.names))
    header = list(parquet.schema_arrow.names)
    size, total = path.stat().st_size, max(1, parquet.metadata.num_rows)
    first = 1
    for batch in parquet.iter_batches(batch_size=chunk_rows, columns=[header[i] for i in picks.values()]):
        frame = pd.DataFrame(
            {name: parquet_text(batch.column(i).to_pylist()) for i, name in enumerate(picks)}, dtype=object
        )
        frame["_line"] = np.arange(first, first + len(frame))
        first += len(frame)
        progress(int(size * len(frame) / total))
        yield frame


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
    path: Path,
    choose_columns: Callable[[list[str]], dict[str, int]],
    chunk_rows: int,
    progress: ProgressFactory | None,
) -> Iterator[tuple[pd.DataFrame, bool]]:
    """(frame, is_parquet) chunks of either format; ``progress`` hears of the bytes read."""
    path = Path(path)
    if path.is_dir():
        raise ImportInputError(path, "is a folder, not a file")
    parquet = _is_parquet(path)
    reader = _parquet_chunks if parquet else _csv_chunks
    size = path.stat().st_size
    bar: AbstractContextManager[Callable[[int], None]] = (
        progress(path, size) if progress else nullcontext(lambda _n: None)
    )
    with bar as update:
        for frame in reader(path, choose_columns, chunk_rows, update):
            yield frame, parquet


def column_picker(
    path: Path, wanted: Callable[[dict[str, str]], list[str]]
) -> Callable[[list[str]], dict[str, int]]:
    """Header -> {canonical name: position}. Names match case-insensitively; ``wanted`` gets
    {lower-case name: name as written} and returns the canonical names to read, or raises."""

    def choose(header: list[str]) -> dict[str, int]:
        positions: dict[str, int] = {}
        for i, name in enumerate(header):
            positions.setdefault(name.lower(), i)
        present = {name.lower(): name for name in reversed(header)}
        return {name: positions[name.lower()] for name in wanted(present) if name.lower() in positions}

    return choose
