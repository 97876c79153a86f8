"""The measured side of goal G1 (see ``benchmarks.rollup_goal``), in its own process:
``python -m benchmarks.rollup_worker PARAMS_JSON RESULT_PATH``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select

from benchmarks.common import worker_args, write_result
from benchmarks.run import explain
from benchmarks.worker import Project, asset_only, bare_query, roll_up_window, rounds, row_count
from heliox_orchestration.assets import IDLE_KEY
from heliox_orchestration.costs.common import records_of
from heliox_orchestration.costs.rollup import days_condition
from heliox_orchestration.db.rollup_schema import daily_resource_usage
from heliox_orchestration.detections.idle import (
    RAW,
    compute_idle_evaluation,
    idle_candidates_query,
    idle_window,
)
from heliox_orchestration.detections.idle_rollup import plan_segments, rollup_candidates_query
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.settings import Settings


def rollup_idle_task(params: dict[str, Any]) -> dict[str, Any]:
    settings = Settings(timezone=params["timezone"])
    url, as_of = params["url"], dt.datetime.fromisoformat(params["as_of"])
    engine = HelioxDatabase(url=url).get_engine()
    window = idle_window(settings, as_of)
    setup_s = roll_up_window(url, settings, as_of)

    raw = compute_idle_evaluation(engine, settings, as_of, source=RAW)
    rolled = compute_idle_evaluation(engine, settings, as_of)
    identical = records_of(raw.findings) == records_of(rolled.findings) and raw.withheld == rolled.withheld
    r = daily_resource_usage.c
    with engine.connect() as conn:
        rollup_days, raw_segments = plan_segments(conn, window.start, window.end, settings)
        rollup_rows = conn.execute(
            select(func.count()).where(days_condition(r.day, rollup_days))
        ).scalar_one()
    counts = {
        "rollup_days": len(rolled.rollup_days),
        "raw_days": len(rolled.raw_days),
        "rollup_rows": int(rollup_rows),
        "rightsizing": len(rolled.rightsizing),
        "findings": len(rolled.findings),
    }
    plan = explain(url, rollup_candidates_query(rollup_days, raw_segments, settings))

    project = Project(settings)
    bare = idle_candidates_query(window, settings)
    run_config = {"ops": {IDLE_KEY.path[-1]: {"config": {"as_of": params["as_of"]}}}}

    def one_round(timed: bool) -> dict[str, float]:
        out: dict[str, float] = {}
        out["bare_raw_query_s"], _ = bare_query(url, bare)
        wall, result = project.materialize(url, asset_only(IDLE_KEY), run_config=run_config)
        out["materialization_s"] = wall
        out["step_s"] = project.step_seconds(result, IDLE_KEY.path[-1])
        counts["findings"] = row_count(result, IDLE_KEY)
        return out

    measured = rounds(params["repeat"], one_round)
    return {**measured, "counts": counts, "identical": identical, "plan": plan, "setup_s": setup_s}


def main() -> None:
    params, result_path = worker_args()
    write_result(result_path, rollup_idle_task(params))


if __name__ == "__main__":
    main()
