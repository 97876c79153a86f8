"""Small helpers shared by the cost and detection modules: result frames, labels, markdown."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, cast

import pandas as pd
from sqlalchemy import Connection, Executable

from heliox_orchestration.money import MICROS

UNATTRIBUTED = "Unattributed"
HOURS_PER_MONTH = 730  # the monthly cost convention everywhere in Heliox (see db/gpu_prices.py)


class NotMaterializedError(LookupError):
    """A loader found no materialization for what it was asked; the message says what to run."""


def fetch_frame(conn: Connection, query: Executable) -> pd.DataFrame:
    """Rows of ``query`` as an object-dtype frame: values stay exact Python objects (int,
    Decimal, aware datetime, None) instead of being coerced to floats or NaN."""

    result = conn.execute(query)
    return pd.DataFrame(result.all(), columns=list(result.keys()), dtype=object)


def records_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of a frame with string column names, as plain dicts."""
    return cast(list[dict[str, Any]], frame.to_dict("records"))


def as_int(value: Any) -> int:
    """An integer from a database aggregate (PostgreSQL returns SUM(bigint) as Decimal)."""
    return int(value or 0)


def dollars_to_micros(value: Decimal) -> int:
    return int(value.quantize(MICROS) * 1_000_000)


def micros_ratio(numerator_micros: int, denominator: int) -> Decimal:
    """``numerator / denominator`` in dollars, rounded half-up to the micro-dollar."""
    return (Decimal(numerator_micros) / denominator * MICROS).quantize(MICROS, rounding=ROUND_HALF_UP)


def model_label(model_name: str | None) -> str:
    return model_name if model_name else UNATTRIBUTED


def utc_hour(instant: dt.datetime) -> dt.datetime:
    """The start of the UTC hour holding ``instant`` (which must be timezone-aware)."""
    if instant.tzinfo is None:
        raise ValueError(f"a timezone-aware datetime is required, got {instant!r}")
    return instant.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Mapping[str, Callable[[Any], str]],
    empty: str = "_no rows_",
) -> str:
    """A GitHub-flavoured markdown table: ``columns`` maps each header to a cell formatter
    applied to ``row[header]``."""
    if not rows:
        return empty
    headers = list(columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = (str(columns[h](row[h])).replace("|", "\\|") for h in headers)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
