"""Issue 18's storage and run figures, measured beside the fleet benchmark (benchmarks/run.py):

* G2: bytes per usage row, the usage table plus all its indexes (every partition), and whether
  the day query reads through an index on usage_hour (its step / bare ratio is goal 1 of run.py);
* G5: today's refresh on the long vs the 7-day history (goal 3a of run.py, the same number);
* item 4: the ``daily_gpu_costs`` step and the burn-rate alert run end to end in a fresh process
  (``dagster asset materialize`` / ``dagster job execute`` against the code location, as the run
  launcher starts a run in a new process), beside the warm in-process figures;
* reported without a goal: retention dropping one month partition vs DELETE of the same rows;
* G4 (``--g4``): a 100,000-GPU x 14-day fleet (33.6 M rows) in its own database: the day step
  vs its bare query and the peak RSS of the process that materializes it; idle recommendations
  over the rollup (G1's worker, the window rolled up first) vs the bare raw idle query, their
  findings identical to the raw rule, and that process's peak RSS.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from benchmarks import rollup_goal
from benchmarks.common import median
from benchmarks.seeding import prepare_database, usage_sizes
from heliox_orchestration.db.engine import make_engine
from heliox_orchestration.db.usage_partitions import month_partitions
from heliox_orchestration.ingest.demo_fleet import FleetSpec

ROOT = Path(__file__).resolve().parents[1]
G4_GPUS, G4_DAYS = 100_000, 14
BYTES_PER_ROW_GOAL = 150
# An index scan of usage_hour: the BRIN index of a partition (named by PostgreSQL after the
# parent's), or the 0.1 covering B-tree.
USAGE_HOUR_INDEX_SCAN = re.compile(r"Index (Only )?Scan (using|on) \S*usage_hour\S*")


def uses_usage_hour_index(plan: str) -> bool:
    return bool(USAGE_HOUR_INDEX_SCAN.search(plan))


def storage_facts(url: str) -> dict[str, Any]:
    """Size of the usage table and its indexes per usage row; its partitions."""
    engine = make_engine(url)
    try:
        table, indexes = usage_sizes(engine)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT count(*) FROM gpu_usage_rows")).scalar_one()
            partitions = len(month_partitions(conn))
            index_names = conn.execute(
                text("SELECT indexname FROM pg_indexes WHERE tablename = 'gpu_usage_rows'")
            ).scalars()
            index_list = sorted(index_names)
    finally:
        engine.dispose()
    return {
        "usage_rows": rows,
        "table_mb": table / 2**20,
        "indexes_mb": indexes / 2**20,
        "bytes_per_row": (table + indexes) / rows if rows else 0.0,
        "table_bytes_per_row": table / rows if rows else 0.0,
        "index_bytes_per_row": indexes / rows if rows else 0.0,
        "month_partitions": partitions,
        "usage_indexes": len(index_list),
    }


# --- fresh processes: a run as the run launcher starts it --------------------------------------


def _dagster_env(url: str, dagster_home: Path) -> dict[str, str]:
    drop = {"SLACK_WEBHOOK_URL", "HELIOX_ENV", "DAGSTER_HOME", "HELIOX_DATABASE_URL", "TIMEZONE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "HELIOX_DATABASE_URL": url, "TIMEZONE": "UTC", "DAGSTER_HOME": str(dagster_home)}


def _timed(argv: list[str], env: dict[str, str], log_path: Path) -> float:
    with log_path.open("ab") as out:
        began = time.perf_counter()
        proc = subprocess.run(argv, cwd=ROOT, env=env, stdout=out, stderr=out, check=False)
        seconds = time.perf_counter() - began
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(argv[:5])} failed with exit code {proc.returncode}:\n{tail}")
    return seconds


def cold_runs(url: str, today: str, workdir: Path, repeat: int) -> dict[str, Any]:
    """Wall seconds of a fresh ``dagster`` process materializing today's daily_gpu_costs
    partition, and of one running burn_rate_alert_job for today (preview mode: no webhook)."""
    home = workdir / "dagster_home"
    home.mkdir(exist_ok=True)
    env = _dagster_env(url, home)
    dagster = str(Path(sys.executable).with_name("dagster"))
    config = workdir / "burn_rate.yaml"
    config.write_text(f"ops:\n  send_burn_rate_alert:\n    config:\n      day: '{today}'\n")
    step = [dagster, "asset", "materialize", "-m", "heliox_orchestration.definitions"]
    step += ["--select", "daily_gpu_costs", "--partition", today]
    alert = [dagster, "job", "execute", "-m", "heliox_orchestration.definitions"]
    alert += ["-j", "burn_rate_alert_job", "-c", str(config)]
    samples: dict[str, list[float]] = {"step_s": [], "alert_s": []}
    for _ in range(repeat):
        samples["step_s"].append(_timed(step, env, workdir / "cold-step.log"))
        samples["alert_s"].append(_timed(alert, env, workdir / "cold-alert.log"))
    return {"samples": samples, "median": {k: median(v) for k, v in samples.items()}}


# --- retention: one month dropped vs deleted -----------------------------------------------------


def retention_drop_vs_delete(url: str) -> dict[str, Any]:
    """The oldest full month of the usage table copied twice into standalone tables with the
    usage table's indexes: one copy emptied by DELETE (what SQLite does, and what a plain table
    would need), the other dropped (what retention does to a partition). The usage table itself
    is not touched."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            months = month_partitions(conn)
        if not months:
            return {"rows": 0}
        month = months[0]
        copies = ("heliox_bench_month_delete", "heliox_bench_month_drop")
        with engine.begin() as conn:
            for name in copies:
                conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
                conn.execute(text(f"CREATE TABLE {name} AS SELECT * FROM {month.name} ORDER BY usage_hour"))
                conn.execute(text(f"ALTER TABLE {name} ADD PRIMARY KEY (resource_key, usage_hour)"))
                conn.execute(text(f"CREATE INDEX ON {name} USING brin (usage_hour)"))
            rows = conn.execute(text(f"SELECT count(*) FROM {copies[0]}")).scalar_one()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for name in copies:
                conn.execute(text(f"VACUUM (ANALYZE) {name}"))
        with engine.begin() as conn:
            began = time.perf_counter()
            deleted = conn.execute(
                text(f"DELETE FROM {copies[0]} WHERE usage_hour >= :s AND usage_hour < :e"),
                {"s": month.start, "e": month.end},
            ).rowcount
        delete_s = time.perf_counter() - began
        with engine.begin() as conn:
            began = time.perf_counter()
            conn.execute(text(f"DROP TABLE {copies[1]}"))
        drop_s = time.perf_counter() - began
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE {copies[0]}"))
    finally:
        engine.dispose()
    return {
        "rows": int(rows),
        "deleted_rows": int(deleted or 0),
        "delete_s": delete_s,
        "drop_partition_s": drop_s,
        "delete_vs_drop_ratio": delete_s / drop_s if drop_s else 0.0,
    }


# --- G4: the 100,000-GPU fleet -------------------------------------------------------------------


def g4_fleet(
    url: str,
    end_date: dt.date,
    seed: int,
    workdir: Path,
    repeat: int,
    run_worker: Callable[[str, dict[str, Any], Path], dict[str, Any]],
    log: Callable[[str], None],
    *,
    gpus: int = G4_GPUS,
    days: int = G4_DAYS,
) -> dict[str, Any]:
    spec = FleetSpec(gpus=gpus, days=days, end_date=end_date, seed=seed, timezone="UTC")
    prepared = prepare_database(url, spec, log=log)
    today = end_date.isoformat()
    log(f"(G4) today's partition on {gpus:,} GPUs x {days} days")
    part = run_worker(
        "benchmarks.worker",
        {"timezone": "UTC", "repeat": repeat, "task": "partition", "today": today, "urls": {"main": url}},
        workdir,
    )
    samples = part["samples"]
    ratio = median([a / b for a, b in zip(samples["main.step_s"], samples["main.bare_query_s"], strict=True)])
    log("(G4) idle_gpu_recommendations over the rollup (G1's worker: the window rolled up first)")
    as_of = dt.datetime.combine(end_date + dt.timedelta(days=1), dt.time(), dt.UTC)
    idle = rollup_goal.measure(run_worker, url, as_of, "UTC", repeat, workdir)
    s = idle["samples"]
    return {
        "gpus": gpus,
        "days": days,
        "usage_rows": prepared.rows,
        "seed_s": prepared.seed_seconds,
        "step_s": part["median"]["main.step_s"],
        "bare_query_s": part["median"]["main.bare_query_s"],
        "step_vs_bare_ratio": ratio,
        "process_peak_rss_mb": part["process_peak_rss_mb"],
        # The nightly refresh of yesterday, rollup included (reported, no goal).
        "nightly_step_s": part["median"]["yesterday.step_s"],
        "nightly_step_vs_bare_ratio": median(
            [
                a / b
                for a, b in zip(samples["yesterday.step_s"], samples["yesterday.bare_query_s"], strict=True)
            ]
        ),
        "rollup_write_vs_cost_query_ratio": median(
            [
                a / b
                for a, b in zip(
                    samples["yesterday.rollup_write_s"], samples["yesterday.cost_query_s"], strict=True
                )
            ]
        ),
        "idle_vs_bare_raw_ratio": median(
            [a / b for a, b in zip(s["materialization_s"], s["bare_raw_query_s"], strict=True)]
        ),
        "idle_findings_identical_to_raw_rule": bool(idle["identical"]),
        "idle_process_peak_rss_mb": idle.get("process_peak_rss_mb"),
    }


# --- the section of the report -------------------------------------------------------------------


def storage_section(
    *,
    main_url: str,
    today: str,
    workdir: Path,
    repeat: int,
    plans: dict[str, str],
    warm: dict[str, float],
    refresh_ratio: float,
    g4: Callable[[], dict[str, Any]] | None,
    log: Callable[[str], None],
) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str, float | bool, str, float | bool, str]]]:
    """Measurements and goals (id, name, value, op, target, unit) of issue 18, from the main
    database, the day query plans and the warm in-process figures of run.py."""
    log("(G2) usage table size per row")
    storage = storage_facts(main_url)
    day_plans = {name: plan for name, plan in plans.items() if name.startswith("day_query_")}
    on_index = all(uses_usage_hour_index(plan) for plan in day_plans.values())
    storage["day_query_on_usage_hour_index"] = on_index
    log("(item 4) fresh processes: daily_gpu_costs step and burn-rate alert run")
    cold = cold_runs(main_url, today, workdir, repeat)
    cold_m = {
        "fresh_process_step_s": cold["median"]["step_s"],
        "warm_materialization_s": warm["materialization_s"],
        "warm_step_s": warm["step_s"],
        "fresh_process_alert_run_s": cold["median"]["alert_s"],
        "fresh_step_vs_warm_ratio": cold["median"]["step_s"] / warm["materialization_s"],
    }
    log("retention: one month partition dropped vs its rows deleted")
    retention = retention_drop_vs_delete(main_url)
    goals: list[tuple[str, str, float | bool, str, float | bool, str]] = [
        (
            "G2",
            "bytes per usage row (table + indexes)",
            storage["bytes_per_row"],
            "<=",
            BYTES_PER_ROW_GOAL,
            " B",
        ),
        ("G2b", "day query on a usage_hour index", on_index, "is", True, ""),
        ("G5", "today's refresh, long / 7-day history", refresh_ratio, "<=", 1.2, "x"),
    ]
    measurements = {"storage": storage, "fresh_process_runs": cold_m, "retention_month": retention}
    if g4 is not None:
        fleet = g4()
        measurements["g4_fleet"] = fleet
        goals += [
            ("G4a", "G4 day step / bare day query", fleet["step_vs_bare_ratio"], "<=", 1.5, "x"),
            ("G4b", "G4 day step process peak RSS", fleet["process_peak_rss_mb"], "<=", 400, "MB"),
            ("G4c", "G4 idle / bare raw idle query", fleet["idle_vs_bare_raw_ratio"], "<=", 0.25, "x"),
            (
                "G4d",
                "G4 idle findings = raw rule",
                fleet["idle_findings_identical_to_raw_rule"],
                "is",
                True,
                "",
            ),
        ]
        if fleet["idle_process_peak_rss_mb"] is not None:
            goals.append(
                ("G4e", "G4 idle process peak RSS", fleet["idle_process_peak_rss_mb"], "<=", 400, "MB")
            )
    return measurements, goals
