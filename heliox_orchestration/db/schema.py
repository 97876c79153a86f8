"""The Heliox database: one SQLAlchemy Core ``MetaData`` for SQLite and PostgreSQL.

Two types carry the rules every query relies on:

* ``UTCDateTime`` stores instants as UTC. SQLite has no time zones and SQLAlchemy's SQLite
  ``DateTime`` silently drops a bound parameter's offset, so an aware local-time bound would be
  compared with UTC rows off by hours. Binding converts to UTC (and refuses naive values); results
  come back aware in UTC on both databases.
* ``Money`` is NUMERIC(18, 6) on PostgreSQL (exact). SQLite has no decimal type and keeps REAL,
  so sums over it are done in integer micro-dollars (see ``money_sum_micros``), which is exact on
  both and is turned into ``Decimal`` in Python.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ColumnElement,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    TypeDecorator,
    cast,
    func,
)

MICROS = Decimal("0.000001")
CENTS = Decimal("0.01")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware instant stored as UTC (``timestamptz`` on PostgreSQL)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            raise ValueError(f"UTCDateTime needs a timezone-aware datetime, got {value!r}")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def sqlite_datetime_text(value: dt.datetime) -> str:
    """The exact text SQLAlchemy's SQLite DateTime writes; raw bulk inserts must match it,
    because SQLite compares these values as strings."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class Money(TypeDecorator[Decimal]):
    """US dollars with six decimals, returned as ``Decimal``."""

    impl = Numeric(18, 6)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Numeric(18, 6, asdecimal=False))
        return dialect.type_descriptor(Numeric(18, 6))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = Decimal(value).quantize(MICROS)
        return float(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(repr(value) if isinstance(value, float) else value).quantize(MICROS)


def money_sum_micros(column: ColumnElement[Any]) -> ColumnElement[int]:
    """``SUM`` of a Money column in whole micro-dollars: exact on SQLite's REAL storage too,
    because every stored value has at most six decimals and rounds back to its integer."""
    return func.sum(cast(func.round(column * 1_000_000), BigInteger))


def micros_to_dollars(micros: int | Decimal | None) -> Decimal:
    return (Decimal(int(micros or 0)) * MICROS).quantize(MICROS)


metadata = MetaData()

gpu_usage_hourly = Table(
    "gpu_usage_hourly",
    metadata,
    Column("usage_hour", UTCDateTime(), nullable=False, comment="UTC start of the hour"),
    Column("provider", String(32), nullable=False),
    Column("region", String(64), nullable=True),
    Column("resource_id", String(255), nullable=False),
    Column("gpu_type", String(32), nullable=False),
    Column("gpu_count", Integer, nullable=False),
    Column("model_name", String(255), nullable=True, comment="NULL = unattributed workload"),
    Column("team", String(128), nullable=True),
    Column("cost_usd", Money(), nullable=False, comment="cost of the resource for this hour"),
    Column("gpu_utilization_pct", Numeric(5, 2, asdecimal=False), nullable=True),
    PrimaryKeyConstraint("resource_id", "usage_hour", name="pk_gpu_usage_hourly"),
    CheckConstraint("gpu_count >= 1", name="ck_gpu_usage_hourly_gpu_count"),
    comment="One row per GPU resource per hour.",
)
# The primary key index serves per-resource scans; day-range scans use this one.
Index("ix_gpu_usage_hourly_usage_hour", gpu_usage_hourly.c.usage_hour)

# --- Alert ledger (automation): one row per alert key; the unique key decides who sends. ---
alert_ledger = Table(
    "alert_ledger",
    metadata,
    Column("alert_key", String(255), primary_key=True, comment="e.g. burn-rate:2026-01-09:100"),
    Column("alert_type", String(32), nullable=False),
    Column("status", String(16), nullable=False, comment="sending | sent | failed | previewed"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("http_status", Integer, nullable=True),
    Column("last_error", String(1000), nullable=True, comment="masked: never holds the webhook"),
    Column("payload_sha256", String(64), nullable=True),
    Column("run_id", String(64), nullable=True),
    Column("relevant_until", UTCDateTime(), nullable=True, comment="redeliver a failure until"),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime(), nullable=True),
    CheckConstraint(
        "status IN ('sending', 'sent', 'failed', 'previewed')", name="ck_alert_ledger_status"
    ),
)
Index("ix_alert_ledger_created_at", alert_ledger.c.created_at)
