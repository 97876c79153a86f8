"""The project's side of the benchmark, in its own process: Heliox's assets materialized through
Dagster's real machinery (``dagster.materialize`` on an ephemeral instance, the ``heliox_db``
resource), interleaved round by round with the bare aggregate queries they are compared with.

Run as ``python -m benchmarks.worker PARAMS_JSON RESULT_PATH``; ``PARAMS_JSON["task"]`` is
``partition``, ``idle`` or ``backfill``. Each task runs one untimed warm-up round (engine, schema
check, Dagster's first-run imports), then ``repeat`` timed rounds.
"""

# No `from __future__ import annotations`: Dagster inspects the annotations of the trivial asset.

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from dagster import (
    AssetCheckKey,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    ExecuteInProcessResult,
    MaterializeResult,
    asset,
    materialize,
)
from sqlalchemy import Executable, text

from benchmarks.common import median, worker_args, write_result
from heliox_orchestration import clock
from heliox_orchestration.assets import DAILY_COSTS_KEY, IDLE_KEY, build_asset_defs
from heliox_orchestration.assets.checks import INPUT_CHECK
from heliox_orchestration.assets.costs import FUTURE_CHECK
from heliox_orchestration.costs.daily_costs import (
    compute_daily_costs,
    daily_costs_query,
    local_days,
    write_daily_costs,
)
from heliox_orchestration.costs.quality import usage_rule_query
from heliox_orchestration.costs.rollup import (
    ROLLUP_TABLES,
    Segment,
    forget_rollup_days,
    segment_rows_query,
    spend_rows_query,
    write_rollup,
)
from heliox_orchestration.detections.idle import idle_candidates_query, idle_window
from heliox_orchestration.partitions import daily_partitions, local_days_of, local_range_bounds
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings
from heliox_orchestration.settings import Settings

TRIVIAL_KEY = AssetKey("benchmark_trivial_partition")
# The run tags of a single-run backfill (what the Dagster UI and `--partition-range` set).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def build_trivial_asset(settings: Settings) -> AssetsDefinition:
    """Dagster's fixed overhead: a one-partition asset that only asks the database ``SELECT 1``."""

    @asset(key=TRIVIAL_KEY, partitions_def=daily_partitions(settings))
    def benchmark_trivial_partition(
        context: AssetExecutionContext, heliox_db: HelioxDatabase
    ) -> MaterializeResult:
        with heliox_db.get_engine().connect() as conn:
            conn.execute(text("SELECT 1")).scalar_one()
        return MaterializeResult(metadata={"dagster/row_count": 1})

    return benchmark_trivial_partition


class Project:
    """Heliox's definitions of one ``Settings``, materialized in this process."""

    def __init__(self, settings: Settings) -> None:
        defs = build_asset_defs(settings)
        self.settings = HelioxSettings.of(settings)
        self.assets: list[Any] = [
            *(defs.assets or []),
            *(defs.asset_checks or []),
            build_trivial_asset(settings),
        ]
        self.instance = DagsterInstance.ephemeral()

    def materialize(
        self,
        url: str,
        selection: AssetSelection,
        *,
        partition_key: str | None = None,
        tags: Mapping[str, str] | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> tuple[float, ExecuteInProcessResult]:
        began = time.perf_counter()
        result = materialize(
            self.assets,
            selection=selection,
            partition_key=partition_key,
            tags=tags,
            run_config=dict(run_config or {}),
            resources={"heliox_db": HelioxDatabase(url=url), "heliox_settings": self.settings},
            instance=self.instance,
        )
        return time.perf_counter() - began, result

    def step_seconds(self, result: ExecuteInProcessResult, step_key: str) -> float:
        """The step's duration as Dagster recorded it: STEP_START to STEP_SUCCESS in the event log."""
        records = self.instance.all_logs(
            result.run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}
        )
        times = {r.dagster_event_type: r.timestamp for r in records if r.step_key == step_key}
        return times[DagsterEventType.STEP_SUCCESS] - times[DagsterEventType.STEP_START]


def rollup_segments(first: dt.date, last: dt.date, settings: Settings) -> list[Segment]:
    return [Segment(d.day, d.start, d.end) for d in local_days(first, last, settings.timezone)]


def rollup_queries(first: dt.date, last: dt.date, settings: Settings) -> list[Executable]:
    """The per-resource rollup and spend rows the step also computes (issue 18) for the days that
    have ended, two queries per day as ``write_rollup`` runs them: part of its bare SQL."""
    pct = settings.idle_utilization_pct
    ended = [s for s in rollup_segments(first, last, settings) if s.end <= clock.utc_now()]
    return [q for s in ended for q in (segment_rows_query([s], pct), spend_rows_query(s))]


def rollup_write(url: str, first: dt.date, last: dt.date, settings: Settings) -> float:
    """Seconds of ``write_rollup`` of the days (committed: the step rewrites the same rows)."""
    engine = HelioxDatabase(url=url).get_engine()
    segments = rollup_segments(first, last, settings)
    began = time.perf_counter()
    with engine.begin() as conn:
        write_rollup(conn, segments, settings.timezone, settings.idle_utilization_pct, _now())
    return time.perf_counter() - began


def stand_in_today(today: dt.date, settings: Settings) -> None:
    """Stand this process's clock (``heliox_orchestration.clock``, as the tests do) at the last
    second of the local day ``today``: every seeded hour of it has arrived and the day has not
    ended, as the hourly burn-rate refreshes see today. The day before has ended (the nightly
    refresh of yesterday, which writes the rollup)."""
    now = local_days(today, today, settings.timezone)[0].end - dt.timedelta(seconds=1)
    clock.utc_now = lambda: now


def bare_queries(url: str, *queries: Executable) -> tuple[float, int]:
    """The SQL a step must run, one query after the other: the seconds of all, the rows of the last.
    Since issue 12 every cost asset scans its input rules first, then aggregates."""
    total, rows = 0.0, 0
    for query in queries:
        seconds, rows = bare_query(url, query)
        total += seconds
    return total, rows


def bare_query(url: str, query: Executable) -> tuple[float, int]:
    """The aggregate query alone, on the same pooled engine the resource uses; all rows fetched."""
    engine = HelioxDatabase(url=url).get_engine()
    began = time.perf_counter()
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return time.perf_counter() - began, len(rows)


def row_count(result: ExecuteInProcessResult, key: AssetKey) -> int:
    for event in result.get_asset_materialization_events():
        if event.asset_key == key:
            return cast(int, event.materialization.metadata["dagster/row_count"].value)
    raise LookupError(f"{key.to_user_string()} was not materialized")


def rounds(repeat: int, one_round: Callable[[bool], dict[str, float]]) -> dict[str, Any]:
    """One warm-up round, then ``repeat`` timed ones; every series and its median.
    ``one_round(timed)`` may skip work that needs no warming up in the warm-up round."""
    warmup = one_round(False)
    series: dict[str, list[float]] = {}
    for _ in range(repeat):
        for name, value in one_round(True).items():
            series.setdefault(name, []).append(value)
    return {
        "warmup": warmup,
        "samples": series,
        "median": {name: median(values) for name, values in series.items()},
    }


def asset_only(key: AssetKey) -> AssetSelection:
    """The asset and the checks its own op evaluates (its input check and, for daily_gpu_costs,
    the future-rows warning): they cannot be left out. The separate output checks are."""
    own = [AssetCheckKey(key, INPUT_CHECK)] + (
        [AssetCheckKey(key, FUTURE_CHECK)] if key == DAILY_COSTS_KEY else []
    )
    return AssetSelection.assets(key).without_checks() | AssetSelection.checks(*own)


def _now() -> dt.datetime:
    return clock.utc_now()  # the steps' clock: they judge "later than now" by it too


def partition_task(params: dict[str, Any]) -> dict[str, Any]:
    """Today's partition of daily_gpu_costs on each database, the databases interleaved, with the
    clock inside today (the hourly refresh: no rollup); and on the main database yesterday's
    partition (the nightly refresh of a day that has ended: costs and the day's rollup)."""
    settings = Settings(timezone=params["timezone"])
    project = Project(settings)
    today = params["today"]
    day = dt.date.fromisoformat(today)
    stand_in_today(day, settings)
    yesterday = day - dt.timedelta(days=1)
    urls: dict[str, str] = params["urls"]

    def bare_sql(first: dt.date, last: dt.date) -> list[Executable]:
        """Everything the step runs on the usage rows: the input rules, the rollup of the days
        that have ended (none today), the cost query."""
        bounds = local_range_bounds(first, last, settings.timezone)
        rules = usage_rule_query(
            "postgresql", *bounds, max_hourly_cost=settings.max_hourly_cost_usd, now=_now()
        )
        cost = daily_costs_query(local_days(first, last, settings.timezone))
        return [rules, *rollup_queries(first, last, settings), cost]

    today_sql, yesterday_sql = bare_sql(day, day), bare_sql(yesterday, yesterday)
    # The burn-rate refresh as its job runs it: the asset with its input check and its output checks.
    refresh = AssetSelection.assets(DAILY_COSTS_KEY)
    counts: dict[str, int] = {}

    def one_round(timed: bool) -> dict[str, float]:
        out: dict[str, float] = {}
        for label, url in urls.items():
            out[f"{label}.bare_query_s"], counts[f"{label}.query_rows"] = bare_queries(url, *today_sql)
            wall, result = project.materialize(url, asset_only(DAILY_COSTS_KEY), partition_key=today)
            out[f"{label}.materialization_s"] = wall
            out[f"{label}.step_s"] = project.step_seconds(result, "daily_gpu_costs")
            counts[f"{label}.rows_written"] = row_count(result, DAILY_COSTS_KEY)
            wall, result = project.materialize(url, refresh, partition_key=today)
            out[f"{label}.refresh_s"] = wall
            out[f"{label}.refresh_step_s"] = project.step_seconds(result, "daily_gpu_costs")
            wall, _ = project.materialize(url, AssetSelection.assets(TRIVIAL_KEY), partition_key=today)
            out[f"{label}.trivial_s"] = wall
        main = urls["main"]
        # The nightly refresh of yesterday (issue 18): the step with its rollup vs all its bare SQL,
        # and the rollup write alone vs the day's cost query alone.
        out["yesterday.bare_query_s"], _ = bare_queries(main, *yesterday_sql)
        wall, result = project.materialize(
            main, asset_only(DAILY_COSTS_KEY), partition_key=yesterday.isoformat()
        )
        out["yesterday.step_s"] = project.step_seconds(result, "daily_gpu_costs")
        out["yesterday.cost_query_s"], _ = bare_query(main, yesterday_sql[-1])
        out["yesterday.rollup_write_s"] = rollup_write(main, yesterday, yesterday, settings)
        return out

    return {**rounds(params["repeat"], one_round), "counts": counts}


def window_days(settings: Settings, as_of: dt.datetime) -> tuple[dt.date, dt.date]:
    """The first and last local day of the idle window ending at ``as_of``."""
    window = idle_window(settings, as_of)
    return local_days_of(window.start, window.end - dt.timedelta(hours=1), settings.timezone)


def roll_up_window(url: str, settings: Settings, as_of: dt.datetime) -> float:
    """Seconds to roll up the local days of the idle window ending at ``as_of`` as the nightly
    refreshes leave them (``write_daily_costs`` with ``IDLE_UTILIZATION_PCT``), then vacuum the
    rollup tables as autovacuum would between a refresh and the idle evaluations (a rewrite
    leaves the old row versions behind)."""
    engine = HelioxDatabase(url=url).get_engine()
    first, last = window_days(settings, as_of)
    began = time.perf_counter()
    costs = compute_daily_costs(engine, first, last, settings.timezone)
    write_daily_costs(engine, costs, dt.datetime.now(dt.UTC), settings.idle_utilization_pct)
    seconds = time.perf_counter() - began
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ROLLUP_TABLES:
            conn.execute(text(f"VACUUM (ANALYZE) {table.name}"))
    return seconds


def idle_task(params: dict[str, Any]) -> dict[str, Any]:
    """idle_gpu_recommendations over the trailing window vs its bare aggregate query (the input
    rules and the raw 14-day idle query): first with no usable rollup (every hour read raw, as
    after a change of IDLE_UTILIZATION_PCT or TIMEZONE; series ``fallback.*``), then as
    production runs it, the window's days rolled up by the nightly refreshes."""
    settings = Settings(timezone=params["timezone"])
    project = Project(settings)
    url, as_of = params["url"], params["as_of"]
    window = idle_window(settings, dt.datetime.fromisoformat(as_of))
    query = idle_candidates_query(window, settings)
    rules = usage_rule_query(
        "postgresql", window.start, window.end, max_hourly_cost=settings.max_hourly_cost_usd
    )
    run_config = {"ops": {IDLE_KEY.path[-1]: {"config": {"as_of": as_of}}}}
    counts: dict[str, int] = {}

    def one_round(timed: bool) -> dict[str, float]:
        out: dict[str, float] = {}
        out["bare_query_s"], counts["query_rows"] = bare_queries(url, rules, query)
        wall, result = project.materialize(url, asset_only(IDLE_KEY), run_config=run_config)
        out["materialization_s"] = wall
        out["step_s"] = project.step_seconds(result, IDLE_KEY.path[-1])
        counts["findings"] = row_count(result, IDLE_KEY)
        return out

    engine = HelioxDatabase(url=url).get_engine()
    forget_rollup_days(
        engine, window.start.date() - dt.timedelta(days=1), window.end.date() + dt.timedelta(days=1)
    )
    fallback = rounds(params["repeat"], one_round)
    fallback_findings = counts["findings"]
    setup_s = roll_up_window(url, settings, dt.datetime.fromisoformat(as_of))
    measured = rounds(params["repeat"], one_round)
    for part in ("samples", "median"):
        measured[part].update({f"fallback.{k}": v for k, v in fallback[part].items()})
    counts["fallback_findings"] = fallback_findings
    return {**measured, "counts": counts, "rollup_setup_s": setup_s}


def backfill_task(params: dict[str, Any]) -> dict[str, Any]:
    """A range of daily_gpu_costs partitions ending today (the clock inside today, as in the
    partition task: every day but today is rolled up): one single-run backfill, the bare SQL of
    the same days, and one run per partition."""
    settings = Settings(timezone=params["timezone"])
    project = Project(settings)
    url = params["url"]
    first, last = dt.date.fromisoformat(params["first"]), dt.date.fromisoformat(params["last"])
    stand_in_today(last, settings)
    keys: Sequence[str] = [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    query = daily_costs_query(local_days(first, last, settings.timezone))
    rollup = rollup_queries(first, last, settings)
    range_bounds = local_range_bounds(first, last, settings.timezone)
    rules = usage_rule_query(
        "postgresql", *range_bounds, max_hourly_cost=settings.max_hourly_cost_usd, now=_now()
    )
    tags = {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}
    counts: dict[str, int] = {"days": len(keys), "rolled_up_days": len(rollup) // 2}

    def one_round(timed: bool) -> dict[str, float]:
        out: dict[str, float] = {}
        out["bare_query_s"], counts["query_rows"] = bare_queries(url, rules, *rollup, query)
        wall, result = project.materialize(url, asset_only(DAILY_COSTS_KEY), tags=tags)
        out["single_run_s"] = wall
        out["single_run_step_s"] = project.step_seconds(result, "daily_gpu_costs")
        counts["rows_written"] = row_count(result, DAILY_COSTS_KEY)
        if timed:  # the single run already warmed everything the separate runs use
            out["separate_runs_s"] = sum(
                project.materialize(url, asset_only(DAILY_COSTS_KEY), partition_key=key)[0] for key in keys
            )
        return out

    return {**rounds(params["repeat"], one_round), "counts": counts}


TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "partition": partition_task,
    "idle": idle_task,
    "backfill": backfill_task,
}


def main() -> None:
    params, result_path = worker_args()
    write_result(result_path, TASKS[params["task"]](params))


if __name__ == "__main__":
    main()
