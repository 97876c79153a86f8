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
    DDL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ColumnElement,
    Date,
    DateTime,
    Dialect,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    TypeDecorator,
    cast,
    event,
    func,
)

from heliox_orchestration.money import MICROS


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


# The one text form of an hour on SQLite: SQLite compares the text, so an hour written in another
# form ('2026-11-20T05:00:00+00:00') escapes the primary key and lands in the wrong day.
SQLITE_HOUR_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:00:00.000000"
# The largest magnitudes PostgreSQL's NUMERIC(18, 6) and NUMERIC(5, 2) hold: SQLite's REAL would
# also hold Infinity, which sums to $9.2 trillion through the integer micro-dollar cast.
MONEY_LIMIT = 10**12
PERCENT_LIMIT = 1000


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


metadata = MetaData()

# The hourly usage rows are stored keyed by an integer per resource (issue 18, G2: a 4-byte key
# instead of the ResourceId text in every row and in the primary key), and read through the view
# ``gpu_usage_hourly`` with the columns of 0.1 (db/usage_store.py creates it, with triggers so that
# INSERT, UPDATE and DELETE on the view still work). Resources are never deleted.
gpu_resources = Table(
    "gpu_resources",
    metadata,
    Column("resource_key", Integer, Identity(), primary_key=True),
    Column("resource_id", String(255), nullable=False, unique=True, comment="billing ResourceId"),
    comment="One row per GPU resource ever seen; gpu_usage_rows refers to it by resource_key.",
)

# Fixed-width columns first (no alignment padding between them), then the short varlena ones.
gpu_usage_rows = Table(
    "gpu_usage_rows",
    metadata,
    Column("usage_hour", UTCDateTime(), nullable=False, comment="UTC start of the hour"),
    Column("resource_key", Integer, nullable=False, comment="gpu_resources.resource_key"),
    Column("gpu_count", Integer, nullable=False),
    Column("cost_usd", Money(), nullable=False, comment="cost of the resource for this hour"),
    Column("gpu_utilization_pct", Numeric(5, 2, asdecimal=False), nullable=True),
    Column("provider", String(32), nullable=False),
    Column("gpu_type", String(32), nullable=False),
    Column("region", String(64), nullable=True),
    Column("model_name", String(255), nullable=True, comment="NULL = unattributed workload"),
    Column("team", String(128), nullable=True),
    Column(
        "pricing_category",
        String(16),
        nullable=True,
        comment="FOCUS PricingCategory: Standard | Committed | Dynamic | Other; NULL = not known",
    ),
    PrimaryKeyConstraint("resource_key", "usage_hour", name="pk_gpu_usage_rows"),
    # The constraint names of 0.1's gpu_usage_hourly: the messages a refused write gets stay the same.
    CheckConstraint("gpu_count >= 1", name="ck_gpu_usage_hourly_gpu_count"),
    # New databases refuse what no query can sum (see costs/quality.py, whose rules still
    # catch these rows in tables created before the constraints: tables are never altered).
    CheckConstraint(
        f"typeof(cost_usd) IN ('integer', 'real') AND abs(cost_usd) < {MONEY_LIMIT}",
        name="ck_gpu_usage_hourly_cost_usd_number",
    ).ddl_if(dialect="sqlite"),
    CheckConstraint(
        "typeof(gpu_utilization_pct) IN ('integer', 'real', 'null') "
        f"AND abs(gpu_utilization_pct) < {PERCENT_LIMIT}",
        name="ck_gpu_usage_hourly_utilization_number",
    ).ddl_if(dialect="sqlite"),
    CheckConstraint("typeof(gpu_count) = 'integer'", name="ck_gpu_usage_hourly_gpu_count_integer").ddl_if(
        dialect="sqlite"
    ),
    CheckConstraint(
        f"usage_hour GLOB '{SQLITE_HOUR_GLOB}'", name="ck_gpu_usage_hourly_usage_hour_text"
    ).ddl_if(dialect="sqlite"),
    # NUMERIC accepts 'NaN' (and NaN sorts above every number, so a range rule misses it).
    CheckConstraint("cost_usd <> 'NaN'", name="ck_gpu_usage_hourly_cost_usd_not_nan").ddl_if(
        dialect="postgresql"
    ),
    CheckConstraint("gpu_utilization_pct <> 'NaN'", name="ck_gpu_usage_hourly_utilization_not_nan").ddl_if(
        dialect="postgresql"
    ),
    comment="One row per GPU resource per hour (read it through the view gpu_usage_hourly).",
    # PostgreSQL: one partition per UTC month (db/usage_partitions.py creates them ahead of the
    # writers; retention drops whole months). SQLite keeps a plain table.
    postgresql_partition_by="RANGE (usage_hour)",
)
# The primary key index serves per-resource scans; day-range scans use an index on usage_hour. On
# PostgreSQL that is a BRIN index (a few pages per month partition): rows arrive in time order, so
# a day is a handful of block ranges of one partition, and the table stays near its heap size. See
# docs/performance.md. SQLite has neither partitions nor BRIN and keeps a B-tree.
Index("ix_gpu_usage_rows_usage_hour", gpu_usage_rows.c.usage_hour).ddl_if(dialect="sqlite")
Index("brin_gpu_usage_rows_usage_hour", gpu_usage_rows.c.usage_hour, postgresql_using="brin").ddl_if(
    dialect="postgresql"
)
# Rows of a month without its partition yet land here; writers create the month first
# (usage_partitions.ensure_usage_partitions), which moves any such rows into it. Partitions keep
# the names of the logical table: gpu_usage_hourly_YYYY_MM.
USAGE_DEFAULT_PARTITION = "gpu_usage_hourly_default"
event.listen(
    gpu_usage_rows,
    "after_create",
    DDL(f"CREATE TABLE {USAGE_DEFAULT_PARTITION} PARTITION OF gpu_usage_rows DEFAULT").execute_if(
        dialect="postgresql"
    ),
)

# What every reader selects from: the view (not in ``metadata``: create_all does not create it).
views = MetaData()
gpu_usage_hourly = Table(
    "gpu_usage_hourly",
    views,
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
    Column("pricing_category", String(16), nullable=True, comment=gpu_usage_rows.c.pricing_category.comment),
    comment="View: gpu_usage_rows with the resource_id of its resource_key.",
)

# Hours of imported charges that have not started yet (a daily charge for today is spread over
# its 24 hours). gpu_usage_hourly never holds an hour that has not happened: these rows move
# there as their hours start (ingest/pending.py), so a day's charge reaches the burn rate hour by hour.
gpu_usage_pending = Table(
    "gpu_usage_pending",
    metadata,
    *(Column(c.name, c.type, nullable=c.nullable, comment=c.comment) for c in gpu_usage_hourly.columns),
    PrimaryKeyConstraint("resource_id", "usage_hour", name="pk_gpu_usage_pending"),
    CheckConstraint("gpu_count >= 1", name="ck_gpu_usage_pending_gpu_count"),
    comment="Imported resource-hours that have not started yet; moved to gpu_usage_hourly as they start.",
)
Index("ix_gpu_usage_pending_usage_hour", gpu_usage_pending.c.usage_hour)

# --- GPU telemetry (heliox_orchestration.ingest): utilization from Prometheus, kept apart from
# cost because billing exports arrive a day or more after the telemetry. See ingest/telemetry.py.
gpu_utilization_hourly = Table(
    "gpu_utilization_hourly",
    metadata,
    Column("resource_id", String(255), nullable=False, comment="billing ResourceId (label mapped)"),
    Column("usage_hour", UTCDateTime(), nullable=False, comment="UTC start of the hour"),
    Column(
        "utilization_pct",
        Numeric(5, 2, asdecimal=False),
        nullable=False,
        comment="coverage-weighted mean over the GPUs scraped that hour",
    ),
    Column("gpus", Integer, nullable=False, comment="physical GPUs counted that hour"),
    Column(
        "coverage", Numeric(5, 4, asdecimal=False), nullable=False, comment="share of the hour scraped, 0-1"
    ),
    Column("metric", String(64), nullable=False, comment="DCGM metric the value comes from"),
    Column("resource_label", String(255), nullable=False, comment="e.g. Hostname=gpu-node-1"),
    Column("gpu_type", String(32), nullable=True),
    Column("model_name", String(255), nullable=True, comment="workload on the GPUs; NULL = none"),
    Column("team", String(128), nullable=True),
    Column("fetched_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("resource_id", "usage_hour", name="pk_gpu_utilization_hourly"),
    CheckConstraint("gpus >= 1", name="ck_gpu_utilization_hourly_gpus"),
    CheckConstraint(
        "utilization_pct >= 0 AND utilization_pct <= 100", name="ck_gpu_utilization_hourly_utilization"
    ),
    CheckConstraint("coverage > 0 AND coverage <= 1", name="ck_gpu_utilization_hourly_coverage"),
    comment="GPU utilization per resource and hour, from DCGM exporter series in Prometheus.",
)
Index("ix_gpu_utilization_hourly_usage_hour", gpu_utilization_hourly.c.usage_hour)

# --- Cost assets (heliox_orchestration.assets): derived tables, rebuilt from gpu_usage_hourly. ---
# "day" is a local calendar day in TIMEZONE: the 23, 24 or 25 UTC hours between local midnights.
daily_gpu_costs = Table(
    "daily_gpu_costs",
    metadata,
    Column("day", Date, nullable=False, comment="local calendar day in TIMEZONE"),
    Column("provider", String(32), nullable=False),
    Column("gpu_type", String(32), nullable=False),
    Column("model_name", String(255), nullable=True, comment="NULL = unattributed workload"),
    Column("cost_usd", Money(), nullable=False),
    Column("gpu_hours", BigInteger, nullable=False, comment="sum of gpu_count over the hourly rows"),
    Column(
        "avg_utilization_pct",
        Numeric(5, 2, asdecimal=False),
        nullable=True,
        comment="GPU-hour weighted mean; NULL when no row reports utilization",
    ),
    Column("usage_rows", BigInteger, nullable=False, comment="hourly resource rows aggregated"),
    Column("last_usage_hour", UTCDateTime(), nullable=False),
    Column("computed_at", UTCDateTime(), nullable=False),
    comment="Asset daily_gpu_costs: one row per local day, provider, GPU type and model.",
)
# NULLs never collide in a UNIQUE constraint, so the key coalesces the unattributed model name.
Index(
    "ux_daily_gpu_costs_key",
    daily_gpu_costs.c.day,
    daily_gpu_costs.c.provider,
    daily_gpu_costs.c.gpu_type,
    func.coalesce(daily_gpu_costs.c.model_name, ""),
    unique=True,
)

daily_gpu_cost_days = Table(
    "daily_gpu_cost_days",
    metadata,
    Column("day", Date, primary_key=True, comment="local calendar day in TIMEZONE"),
    Column("timezone", String(64), nullable=False, comment="TIMEZONE the day was computed in"),
    Column("start_utc", UTCDateTime(), nullable=False),
    Column("end_utc", UTCDateTime(), nullable=False),
    Column("hours_in_day", Integer, nullable=False, comment="23 or 25 on DST change days"),
    Column("has_data", Boolean, nullable=False, comment="False: no usage rows (a gap, not a $0 day)"),
    Column("cost_usd", Money(), nullable=False),
    Column("gpu_hours", BigInteger, nullable=False),
    Column("usage_rows", BigInteger, nullable=False),
    Column("last_usage_hour", UTCDateTime(), nullable=True),
    Column("computed_at", UTCDateTime(), nullable=False),
    comment="Asset daily_gpu_costs: one row per materialized local day, gaps included.",
)

idle_gpu_evaluations = Table(
    "idle_gpu_evaluations",
    metadata,
    Column("evaluated_at", UTCDateTime(), primary_key=True),
    Column("window_start", UTCDateTime(), nullable=False),
    Column("window_end", UTCDateTime(), nullable=False),
    Column("findings", Integer, nullable=False),
    Column("high_severity_findings", Integer, nullable=False),
    Column("monthly_savings_usd", Money(), nullable=False),
    comment="Asset idle_gpu_recommendations: one row per evaluation; the latest one is open.",
)

idle_gpu_recommendations = Table(
    "idle_gpu_recommendations",
    metadata,
    Column("evaluated_at", UTCDateTime(), nullable=False),
    Column("resource_id", String(255), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("region", String(64), nullable=True),
    Column("gpu_type", String(32), nullable=False),
    Column("gpu_count", Integer, nullable=False),
    Column("model_name", String(255), nullable=True),
    Column("team", String(128), nullable=True),
    Column("severity", String(8), nullable=False),
    Column("idle_days", Integer, nullable=False, comment="trailing idle streak hours // 24"),
    Column("idle_pct", Integer, nullable=False, comment="idle / observed hours, whole percent"),
    Column("observed_hours", Integer, nullable=False),
    Column("idle_hours", Integer, nullable=False),
    Column("streak_hours", Integer, nullable=False),
    Column("streak_start", UTCDateTime(), nullable=False),
    Column("last_active_hour", UTCDateTime(), nullable=True, comment="NULL: never active in window"),
    Column("last_observed_hour", UTCDateTime(), nullable=False),
    Column("hourly_cost_usd", Money(), nullable=False, comment="mean over the idle streak"),
    Column("monthly_savings_usd", Money(), nullable=False, comment="hourly_cost_usd x 730"),
    Column("title", String(255), nullable=False),
    Column("detail", String(255), nullable=False),
    Column(
        "action", String(16), nullable=True, comment="terminate | reallocate (committed); NULL = terminate"
    ),
    PrimaryKeyConstraint("evaluated_at", "resource_id", name="pk_idle_gpu_recommendations"),
    CheckConstraint("severity IN ('high', 'medium', 'low')", name="ck_idle_gpu_recommendations_severity"),
    comment="Asset idle_gpu_recommendations: findings of each evaluation.",
)

idle_gpu_withheld_resources = Table(
    "idle_gpu_withheld_resources",
    metadata,
    Column("evaluated_at", UTCDateTime(), nullable=False),
    Column("resource_id", String(255), nullable=False),
    Column("usage_rows", Integer, nullable=False, comment="its usage rows in the window failing a rule"),
    Column("problems", String(1000), nullable=False, comment="the rules they fail, separated by '; '"),
    PrimaryKeyConstraint("evaluated_at", "resource_id", name="pk_idle_gpu_withheld_resources"),
    comment="Asset idle_gpu_recommendations: GPUs not judged by an evaluation (usage rows fail checks).",
)

gpu_cost_summary = Table(
    "gpu_cost_summary",
    metadata,
    Column("report_date", Date, primary_key=True, comment="the day the summary is about"),
    Column("timezone", String(64), nullable=False),
    Column("yesterday_cost_usd", Money(), nullable=False),
    Column("last_7_days_cost_usd", Money(), nullable=False),
    Column("last_30_days_cost_usd", Money(), nullable=False),
    Column("days_with_data_30", Integer, nullable=False),
    Column("high_severity_count", Integer, nullable=False),
    Column("potential_savings_monthly_usd", Money(), nullable=False),
    Column("rightsizing_count", Integer, nullable=True, comment="NULL: stored before rightsizing"),
    Column("rightsizing_savings_monthly_usd", Money(), nullable=True),
    Column("recommendations_as_of", UTCDateTime(), nullable=True),
    Column("computed_at", UTCDateTime(), nullable=False),
    # Set only with MONTHLY_BUDGET_USD: the local month of the report date, through it.
    Column("monthly_budget_usd", Money(), nullable=True),
    Column("month_to_date_usd", Money(), nullable=True),
    Column("month_forecast_usd", Money(), nullable=True, comment="month to date + 7-day mean x days left"),
    comment="Asset gpu_cost_summary: the daily-summary numbers per report date.",
)

gpu_cost_summary_items = Table(
    "gpu_cost_summary_items",
    metadata,
    Column("report_date", Date, nullable=False),
    Column("kind", String(16), nullable=False, comment="top_model | day"),
    Column("position", Integer, nullable=False),
    Column("label", String(255), nullable=True, comment="top_model: model name or Unattributed"),
    Column("day", Date, nullable=True, comment="day: the local day of the series point"),
    Column("cost_usd", Money(), nullable=False),
    Column("has_data", Boolean, nullable=False),
    PrimaryKeyConstraint("report_date", "kind", "position", name="pk_gpu_cost_summary_items"),
    CheckConstraint("kind IN ('top_model', 'day')", name="ck_gpu_cost_summary_items_kind"),
    comment="Asset gpu_cost_summary: top models and the 7-day series of each report date.",
)

spend_anomaly_evaluations = Table(
    "spend_anomaly_evaluations",
    metadata,
    Column("day", Date, primary_key=True, comment="local calendar day in TIMEZONE"),
    Column("timezone", String(64), nullable=False),
    Column("baseline_kind", String(8), nullable=True, comment="weekday | recent; NULL: no baseline"),
    Column("baseline_note", String(255), nullable=False, comment="which baseline, or why none"),
    Column("partial_until", UTCDateTime(), nullable=True, comment="today: end of the hours compared"),
    Column("anomalies", Integer, nullable=False),
    Column("computed_at", UTCDateTime(), nullable=False),
    comment="Asset spend_anomalies: one evaluation per local day.",
)

spend_anomalies = Table(
    "spend_anomalies",
    metadata,
    Column("day", Date, nullable=False),
    Column("dimension", String(8), nullable=False, comment="total | model | team"),
    Column("value", String(255), nullable=False, comment="all, the model (or Unattributed), the team"),
    Column("current_usd", Money(), nullable=False, comment="the day's spend (so far, for today)"),
    Column("baseline_usd", Money(), nullable=False, comment="median over the baseline days"),
    Column("baseline_kind", String(8), nullable=False),
    Column("baseline_days", String(200), nullable=False, comment="comma-separated local days"),
    Column("partial_until", UTCDateTime(), nullable=True),
    PrimaryKeyConstraint("day", "dimension", "value", name="pk_spend_anomalies"),
    comment="Asset spend_anomalies: the series above their baseline by both thresholds.",
)

spend_anomaly_drivers = Table(
    "spend_anomaly_drivers",
    metadata,
    Column("day", Date, nullable=False),
    Column("dimension", String(8), nullable=False),
    Column("value", String(255), nullable=False),
    Column("position", Integer, nullable=False),
    Column("resource_id", String(255), nullable=False),
    Column("current_usd", Money(), nullable=False),
    Column("baseline_usd", Money(), nullable=False),
    PrimaryKeyConstraint("day", "dimension", "value", "position", name="pk_spend_anomaly_drivers"),
    comment="Asset spend_anomalies: the top 3 resources driving each anomaly.",
)
