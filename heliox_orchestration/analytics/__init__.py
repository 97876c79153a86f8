"""GPU cost analytics as plain functions (no Dagster): SQL aggregates pushed down through
SQLAlchemy, small pandas frames, and the report models of ``heliox_orchestration.reports``.

Compute functions read ``gpu_usage_hourly`` and need no prior materialization; ``load_*``
functions read the tables the assets materialized.
"""

from heliox_orchestration.analytics.common import NotMaterializedError
from heliox_orchestration.analytics.daily_costs import (
    DailyCosts,
    compute_daily_costs,
    load_daily_costs,
    write_daily_costs,
)
from heliox_orchestration.analytics.idle import (
    IdleEvaluation,
    compute_idle_evaluation,
    idle_spend_report,
    load_idle_evaluation,
    load_idle_spend_report,
    write_idle_evaluation,
)
from heliox_orchestration.analytics.summary import (
    build_cost_summary,
    burn_rate_from,
    burn_rate_status,
    cost_summary,
    load_burn_rate_status,
    load_cost_summary,
)

__all__ = [
    "DailyCosts",
    "IdleEvaluation",
    "NotMaterializedError",
    "build_cost_summary",
    "burn_rate_from",
    "burn_rate_status",
    "compute_daily_costs",
    "compute_idle_evaluation",
    "cost_summary",
    "idle_spend_report",
    "load_burn_rate_status",
    "load_cost_summary",
    "load_daily_costs",
    "load_idle_evaluation",
    "load_idle_spend_report",
    "write_daily_costs",
    "write_idle_evaluation",
]
