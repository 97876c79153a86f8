"""The per-resource daily rollup of ``gpu_usage_hourly`` (issue 18), on the shared ``metadata``.

``daily_resource_usage`` holds one row per local day in ``TIMEZONE`` (23, 24 or 25 UTC hours)
and ``resource_id``; ``daily_resource_usage_days`` one row per rolled-up day with the settings it
was computed with (``TIMEZONE`` and ``IDLE_UTILIZATION_PCT``); ``daily_resource_spend`` the
spend per day, resource, team and model (the anomaly rule's input). All are written by the
``daily_gpu_costs`` refresh of the day, in the same transaction as its cost rows; see
``costs/rollup.py`` for the rules and ``detections/idle_rollup.py`` for the reader.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    Float,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    or_,
)

from heliox_orchestration.db.schema import Money, UTCDateTime, metadata

daily_resource_usage = Table(
    "daily_resource_usage",
    metadata,
    Column("day", Date, nullable=False, comment="local calendar day in TIMEZONE"),
    Column("resource_id", String(255), nullable=False),
    # Money as integer micro-dollars: exact on both databases, and summed without conversion.
    Column("cost_micros", BigInteger, nullable=False, comment="cost_usd summed, micro-dollars"),
    Column("gpu_hours", Integer, nullable=False, comment="sum of gpu_count over the hourly rows"),
    Column("usage_rows", Integer, nullable=False, comment="observed hours: hourly rows of the day"),
    Column("utilization_rows", Integer, nullable=False, comment="observed hours with a utilization"),
    Column("idle_rows", Integer, nullable=False, comment="hours below the day's idle_utilization_pct"),
    Column("first_observed_hour", UTCDateTime(), nullable=False),
    Column("last_observed_hour", UTCDateTime(), nullable=False),
    Column("first_active_hour", UTCDateTime(), nullable=True, comment="first hour not idle; NULL: none"),
    Column("last_active_hour", UTCDateTime(), nullable=True, comment="last hour not idle; NULL: none"),
    # The rows after the day's last active hour (all of them when it has none): the piece of an
    # idle streak this day contributes, so a streak starting mid-day needs no hourly row.
    Column("tail_idle_rows", Integer, nullable=False),
    Column("tail_idle_cost_micros", BigInteger, nullable=False),
    Column("tail_idle_start", UTCDateTime(), nullable=True, comment="first hour of the tail; NULL: empty"),
    # Double precision: summed fast, and only compared with a threshold (rightsizing).
    Column(
        "utilization_x_gpu_hours",
        Float,
        nullable=True,
        comment="sum of gpu_utilization_pct x gpu_count over rows with a utilization",
    ),
    Column("utilization_gpu_hours", Integer, nullable=False, comment="gpu_count of those rows"),
    Column(
        "peak_gpu_load",
        Float,
        nullable=True,
        comment="max over hours of gpu_count x utilization / 100: GPUs' worth of work",
    ),
    Column("max_gpu_count", Integer, nullable=False),
    Column(
        "committed_cost_micros", BigInteger, nullable=False, comment="rows with pricing_category Committed"
    ),
    Column("committed_rows", Integer, nullable=False),
    PrimaryKeyConstraint("day", "resource_id", name="pk_daily_resource_usage"),
    comment="Rollup (written by daily_gpu_costs): one row per local day and GPU resource.",
)
# The idle rule reads its few candidates' days through this one.
Index("ix_daily_resource_usage_resource_day", daily_resource_usage.c.resource_id, daily_resource_usage.c.day)
# The days that end idle (an idle tail) or of multi-GPU resources: the only resources the idle
# rule and rightsizing can find (a small share of a working fleet).
ENDS_IDLE = or_(
    daily_resource_usage.c.last_active_hour.is_(None),
    daily_resource_usage.c.last_active_hour < daily_resource_usage.c.last_observed_hour,
    daily_resource_usage.c.max_gpu_count > 1,
)
Index(
    "ix_daily_resource_usageENDS_IDLE",
    daily_resource_usage.c.day,
    daily_resource_usage.c.resource_id,
    postgresql_where=ENDS_IDLE,
    sqlite_where=ENDS_IDLE,
)

daily_resource_usage_days = Table(
    "daily_resource_usage_days",
    metadata,
    Column("day", Date, primary_key=True, comment="local calendar day in TIMEZONE"),
    Column("timezone", String(64), nullable=False, comment="TIMEZONE the day was computed in"),
    Column(
        "idle_utilization_pct",
        String(32),
        nullable=False,
        comment="IDLE_UTILIZATION_PCT the idle columns were computed with (the decimal's text)",
    ),
    Column("start_utc", UTCDateTime(), nullable=False),
    Column("end_utc", UTCDateTime(), nullable=False),
    Column("resources", Integer, nullable=False),
    Column(
        "usage_rows", BigInteger, nullable=False, comment="hourly rows rolled up (they passed the checks)"
    ),
    Column("computed_at", UTCDateTime(), nullable=False),
    # Nullable: days rolled up before daily_resource_spend existed have none (NULL: not usable).
    Column("spend_rows", Integer, nullable=True, comment="rows written to daily_resource_spend"),
    comment="Rollup (written by daily_gpu_costs): the settings each rolled-up day was computed with.",
)

# The spend the anomaly rule reads for whole past days: a resource's team and model may change
# within a day, so one row per (day, resource, team, model) as its raw query groups them. No
# primary key (team and model may be NULL); replaced a day at a time with the rows above.
daily_resource_spend = Table(
    "daily_resource_spend",
    metadata,
    Column("day", Date, nullable=False, comment="local calendar day in TIMEZONE"),
    Column("resource_id", String(255), nullable=False),
    Column("team", String(128), nullable=True, comment="as stored in gpu_usage_hourly"),
    Column("model_name", String(255), nullable=True, comment="trimmed; NULL when blank"),
    Column("cost_micros", BigInteger, nullable=False, comment="cost_usd summed, micro-dollars"),
    comment="Rollup (written by daily_gpu_costs): spend per local day, resource, team and model.",
)
Index("ix_daily_resource_spend_day", daily_resource_spend.c.day)

rightsizing_recommendations = Table(
    "rightsizing_recommendations",
    metadata,
    Column("evaluated_at", UTCDateTime(), nullable=False, comment="the idle evaluation that found it"),
    Column("resource_id", String(255), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("region", String(64), nullable=True),
    Column("gpu_type", String(32), nullable=False),
    Column("gpu_count", Integer, nullable=False),
    Column("recommended_gpu_count", Integer, nullable=False, comment="ceil(peak GPU load), at least 1"),
    Column("model_name", String(255), nullable=True),
    Column("team", String(128), nullable=True),
    Column("severity", String(8), nullable=False),
    Column("mean_utilization_pct", Numeric(6, 2, asdecimal=False), nullable=False),
    Column("peak_gpu_load", Numeric(12, 4, asdecimal=False), nullable=False),
    Column("observed_hours", Integer, nullable=False),
    Column("hourly_cost_per_gpu_usd", Money(), nullable=False, comment="window cost / GPU-hours"),
    Column("monthly_savings_usd", Money(), nullable=False, comment="spare GPUs x per-GPU cost x 730"),
    Column("action", String(16), nullable=False, comment="rightsize | reallocate (committed)"),
    Column("title", String(255), nullable=False),
    Column("detail", String(255), nullable=False),
    PrimaryKeyConstraint("evaluated_at", "resource_id", name="pk_rightsizing_recommendations"),
    comment="Asset idle_gpu_recommendations: multi-GPU resources working far below their size.",
)
