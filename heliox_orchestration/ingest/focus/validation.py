"""What the FOCUS import refuses, and how it says so: one message naming the file, the line (or
Parquet row) and the column, raised before anything is written.

Besides values that are not what their column says (checked where they are read, in
``charges`` and ``utilization``), the import refuses everything the database would refuse and everything that
cannot be a real charge:

* text the database cannot store: a NUL character (PostgreSQL text refuses it) or a lone UTF-16
  surrogate (not encodable as UTF-8; JSON ``Tags`` can spell one as ``\\ud800``), and identifiers
  longer than their column;
* costs that are not finite numbers, single charges above ``MAX_CHARGE_USD`` (checked before any
  integer arithmetic, so the micro-dollar arithmetic of a charge cannot overflow), and resource-
  hours whose charges add up to more than ``HELIOX_MAX_HOURLY_COST_USD`` in absolute value;
* date-times before ``EARLIEST`` (no cloud billed a GPU then) and charges or samples that start
  more than ``FUTURE_TOLERANCE`` after now: usage cannot be billed or measured before it happens,
  so such a value almost always means the export's time zone is wrong.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from heliox_orchestration.ingest.focus.coded import Coded
from heliox_orchestration.money import MICROS, format_usd, micros_to_dollars

MAX_CHARGE_USD = Decimal(1_000_000_000)
EARLIEST = pd.Timestamp("2000-01-01", tz="UTC")
FUTURE_TOLERANCE = pd.Timedelta(hours=1)
# The sum of a resource-hour's charges is int64 micro-dollars. Refusing an hour whose charges add
# up, in absolute value, to 2**62 micro-dollars (about $4.6 trillion) or more keeps every partial
# sum, in whatever order the charges are added, far from the int64 limit of 2**63.
MAX_GROSS_MICROS = float(2**62)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_DATE_SHAPE = r"\s*\d{4}-\d{2}-\d{2}"
OUT_OF_RANGE = f"is out of range: expected a date-time from {EARLIEST:%Y-%m-%d} on"


class ImportInputError(ValueError):
    """An input file is unusable; the message names the file, line (or row) and column.

    ``record`` (the n-th record of a CSV file, blank lines not counted) stands in for the line
    while the file is read: a record may span lines, and only an error needs its line, which
    ``files.located`` finds then (``at_line``)."""

    def __init__(
        self,
        path: Path | str,
        message: str,
        *,
        line: int | None = None,
        row: int | None = None,
        column: str | None = None,
        record: int | None = None,
    ) -> None:
        self.path, self.message, self.column, self.record = Path(path), message, column, record
        where = [str(path)]
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if record is not None:
            where.append(f"record {record}")
        if column is not None:
            where.append(f"column {column}")
        super().__init__(f"{', '.join(where)}: {message}")

    def at_line(self, line: int | None) -> ImportInputError:
        """The same error, naming the line its record starts on."""
        return ImportInputError(self.path, self.message, line=line, column=self.column)


class Errors:
    """The first bad value of a chunk, by line, across every check."""

    def __init__(self, path: Path, lines: np.ndarray, parquet: bool) -> None:
        self.path, self.lines, self.parquet = path, lines, parquet
        self.found: list[tuple[int, str, str]] = []

    def check(self, bad: Any, column: str, message: Callable[[int], str]) -> None:
        bad = np.asarray(bad, dtype=bool)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            self.found.append((int(self.lines[i]), column, message(i)))

    def raise_first(self) -> None:
        if self.found:
            line, column, message = min(self.found)
            raise error_at(self.path, self.parquet, line, column, message)


def error_at(path: Path, parquet: bool, record: int, column: str, message: str) -> ImportInputError:
    """The error of a value of ``record`` (a Parquet row, or a CSV record: ``files.located``
    turns it into its line)."""
    place = {"row": record} if parquet else {"record": record}
    return ImportInputError(path, message, column=column, **place)


# --- date-times ----------------------------------------------------------------------------------


def parse_times(values: pd.Series) -> pd.Series:
    """ISO 8601 date-times (with 'T' or a space, 'Z' or an offset; naive means UTC, as FOCUS
    requires UTC) -> UTC timestamps, NaT where unparseable."""
    # pandas also accepts words such as "now" and "today": only values that start as a date do.
    text = pa.array(values.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
    shaped = pc.fill_null(pc.match_substring_regex(text, "^" + _DATE_SHAPE), False)
    dated = values.where(shaped.to_numpy(zero_copy_only=False))
    return pd.to_datetime(dated, format="ISO8601", utc=True, errors="coerce")


def value_at(raw: Any, i: int) -> Any:
    """Row ``i`` of a column as written: a ``Coded`` column or a pandas Series."""
    return raw.row(i) if isinstance(raw, Coded) else raw.iloc[i]


def _naive(timestamp: pd.Timestamp) -> np.datetime64:
    return timestamp.tz_convert("UTC").tz_localize(None).to_datetime64()


def check_times(errors: Errors, raw: Coded, parsed: np.ndarray, column: str) -> None:
    """Empty, unparseable and out-of-range (before EARLIEST) date-times of a column (``parsed``:
    naive UTC datetime64, NaT where unparseable)."""

    def not_a_time(i: int) -> str:
        return f"{raw.row(i)!r} is not an ISO 8601 date-time (e.g. 2024-09-01T00:00:00Z)"

    errors.check(raw.isna(), column, lambda _i: "is empty")
    errors.check(np.isnat(parsed) & raw.notna(), column, not_a_time)
    errors.check(parsed < _naive(EARLIEST), column, lambda i: f"{raw.row(i)!r} {OUT_OF_RANGE}")


def check_not_future(
    errors: Errors, raw: Any, parsed: Any, column: str, now: dt.datetime, message: str
) -> None:
    """Values later than now + FUTURE_TOLERANCE (the tolerance allows for clock skew). ``parsed``
    is a UTC Series, or naive UTC datetime64 beside a ``Coded`` column."""
    latest = pd.Timestamp(now).tz_convert("UTC") + FUTURE_TOLERANCE
    later = parsed > (_naive(latest) if isinstance(parsed, np.ndarray) else latest)
    errors.check(later, column, lambda i: f"{value_at(raw, i)!r} {message}")


# --- text ----------------------------------------------------------------------------------------


def unstorable(text: str) -> str | None:
    """Why a database text column cannot hold ``text``, or None."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "contains a NUL character (\\x00), which a database text column cannot hold"
    return (
        f"contains U+{ord(char):04X}, a lone UTF-16 surrogate that is not valid Unicode text, "
        "which a database text column cannot hold"
    )


def check_text(errors: Errors, values: Any, column: str, max_length: int, *, subject: str = "") -> None:
    """Text written to a column of ``max_length`` characters: refuses what does not fit and what
    the database cannot store. Missing values pass. Each distinct value is looked at once;
    ``subject`` names the value within its column (e.g. a tag of ``Tags``)."""
    coded = values if isinstance(values, Coded) else Coded.from_texts(values)
    codes = coded.codes
    texts = [str(text) for text in coded.values]
    # One scan of all the distinct texts finds none in the common case; else each is looked at.
    if max(map(len, texts), default=0) <= max_length and not _UNSTORABLE.search("".join(texts)):
        return
    problems = [_text_problem(text, max_length) for text in texts]
    bad = np.array([p is not None for p in problems] + [False])[codes]  # code -1: missing
    prefix = f"{subject} " if subject else ""
    errors.check(bad, column, lambda i: f"{prefix}{problems[codes[i]]}")


def _text_problem(text: str, max_length: int) -> str | None:
    if len(text) > max_length:
        return f"is {len(text):,} characters long; the longest Heliox stores is {max_length}"
    return unstorable(text)


# --- money ---------------------------------------------------------------------------------------


def check_costs(errors: Errors, text: Coded, cost: np.ndarray, columns: dict[str, np.ndarray]) -> None:
    """Costs that are not finite numbers or larger than one charge can be: ``text`` as written,
    ``cost`` as parsed to float, ``columns`` maps each cost column to the rows costed from it."""
    with np.errstate(invalid="ignore"):
        unusable = text.notna() & ~(np.abs(cost) <= float(MAX_CHARGE_USD))
    for column, rows in columns.items():
        errors.check(unusable & rows, column, lambda i: cost_problem(text.row(i)))


def cost_problem(raw: str) -> str:
    try:
        value = Decimal(raw.strip())
    except ArithmeticError:
        return f"{raw!r} is not a number"
    if not value.is_finite():
        return f"{raw!r} is not a finite number: a cost is an amount of US dollars"
    if abs(value) <= MAX_CHARGE_USD:
        return f"{raw!r} is not a number"  # Decimal reads it (e.g. '1_000'), a cost export does not
    return (
        f"{raw!r} is more than ${MAX_CHARGE_USD:,} for one charge: not a real cost "
        "(a wrong unit or a corrupt value?)"
    )


def exact_sum(micros: np.ndarray) -> int:
    """The exact sum of int64 micro-dollars, whatever their number: the high and low 32 bits are
    summed separately, neither of which can overflow int64 below 2**31 values."""
    values = np.asarray(micros, dtype=np.int64)
    return int((values >> 32).sum()) * 2**32 + int((values & 0xFFFFFFFF).sum())


def to_micros(raw: str) -> tuple[Decimal, int]:
    """The exact charge and its integer micro-dollars (rounded half to even, once). Callers have
    refused non-finite and oversized values (``check_costs``), so the integer is far inside int64."""
    exact = Decimal(raw.strip())
    return exact, int(exact.quantize(MICROS, rounding=ROUND_HALF_EVEN) * 1_000_000)


def implausible_hours(micros: np.ndarray, gross: np.ndarray, max_hourly_cost_usd: Decimal) -> np.ndarray:
    """Resource-hours (summed ``micros``, float ``gross`` of their charges' absolute
    micro-dollars) above the plausible hourly cost, or whose sum could have overflowed."""
    bound = int(max_hourly_cost_usd.quantize(MICROS) * 1_000_000)
    overflow = gross >= MAX_GROSS_MICROS
    # The int64 sum is exact wherever the gross is below 2**62: only those are compared.
    return overflow | (np.abs(np.where(overflow, 0, micros)) > bound)


def check_hourly_totals(
    hourly: pd.DataFrame, path: Path, parquet: bool, max_hourly_cost_usd: Decimal, setting: str
) -> None:
    """Refuse resource-hours whose charges add up to more than the plausible hourly cost (or
    could overflow the sum), naming a line that charges the hour. ``hourly`` has
    ``cost_micros``, ``_gross`` (float sum of the charges' absolute micro-dollars), ``_line``
    (the first line charging the hour) and ``_billed`` (that line's cost is its BilledCost)."""
    found = hourly_total_error(hourly, path, parquet, max_hourly_cost_usd, setting)
    if found is not None:
        raise found[2]


def hourly_total_error(
    hourly: pd.DataFrame, path: Path, parquet: bool, max_hourly_cost_usd: Decimal, setting: str
) -> tuple[int, pd.Timestamp, ImportInputError] | None:
    """``check_hourly_totals``'s error with its (line, hour), to pick the first of several
    parts of a file; None if every hour is plausible."""
    if hourly.empty:
        return None
    overflow = hourly["_gross"].to_numpy(dtype=float) >= MAX_GROSS_MICROS
    micros = hourly["cost_micros"].to_numpy(dtype=np.int64)
    implausible = implausible_hours(micros, hourly["_gross"].to_numpy(dtype=float), max_hourly_cost_usd)
    if not implausible.any():
        return None
    lines = hourly["_line"].to_numpy(dtype=np.int64)
    candidates = np.flatnonzero(implausible)
    hours = hourly["usage_hour"].to_numpy()[candidates]
    i = int(candidates[np.lexsort((hours, lines[candidates]))[0]])  # the first line, its first hour
    row = hourly.iloc[i]
    hour = pd.Timestamp(row["usage_hour"])
    where = f"resource {row['resource_id']!r} in the hour {hour:%Y-%m-%d %H:%M} UTC"
    if overflow[i]:
        total = "more than $4.6 trillion in absolute value"
    else:
        total = format_usd(micros_to_dollars(int(micros[i])))
    return (
        int(lines[i]),
        hour,
        error_at(
            path,
            parquet,
            int(lines[i]),
            "BilledCost" if row["_billed"] else "EffectiveCost",
            f"the charges of {where} add up to {total}, more than {setting}=${max_hourly_cost_usd:,} "
            "allows for one resource-hour: check the file (a wrong unit or a duplicated export?), "
            f"or raise {setting} if the cost is real",
        ),
    )
