"""Heliox fleet-scale benchmark (issue 7): the pipeline scales with the fleet, not its history.

    python -m benchmarks.run [--gpus N] [--days N] [--quick] [--json] [--repeat K] [--database-url URL]

Seeds (or reuses) a PostgreSQL database of the demo fleet (default 10,000 GPUs x 90 days, 21.6 M
hourly rows) and a 7-day history database of the same fleet, then measures, as ratios:

1. the ``daily_gpu_costs`` step (STEP_START..STEP_SUCCESS in Dagster's event log) vs its bare
   ``SELECT ... GROUP BY``, and the whole in-process materialization next to Dagster's fixed
   overhead (a trivial one-partition asset materialized the same way);
2. the naive way (``pd.read_sql`` of the raw rows, then ``groupby``) vs the project, for one day
   and the 14-day idle window: time and peak RSS, each side in its own process;
3. today's-partition refresh with 90 vs 7 days of history, and the day query's plans;
4. ``idle_gpu_recommendations`` vs its bare aggregate query, and the peak RSS of its process;
5. a 30-day single-run backfill vs the bare SQL of the 30 days and vs 30 separate runs;
6. ``import heliox_orchestration.definitions`` vs ``import dagster`` in fresh processes (reported,
   no goal: every run process imports SQLAlchemy and pandas anyway).
7. issue 18 (benchmarks/storage_goal.py): bytes per usage row (G2), the history growth again
   (G5), the step and the burn-rate alert run in fresh ``dagster`` processes, one month dropped
   vs deleted, and with ``--g4`` the 100,000-GPU x 14-day fleet (G4).

Every time is the median of ``--repeat`` rounds. The two sides of a ratio are measured in the same
process, interleaved round by round, and the ratio is the median of the per-round ratios, so that
a noisy machine does not decide; only naive vs project (two processes) is a ratio of medians.
Exits 1 when a goal is missed (full size only: ``--quick`` is a smoke test of the harness and reports goals
without enforcing them). See docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import Executable, create_engine, make_url, text

from benchmarks import rollup_goal
from benchmarks.common import median
from benchmarks.ingest_goal import measure_ingest
from benchmarks.seeding import Prepared, create_database_if_missing, drop_database, prepare_database
from benchmarks.storage_goal import G4_DAYS, G4_GPUS, g4_fleet, storage_section, uses_usage_hour_index
from heliox_orchestration.costs.daily_costs import daily_costs_query, local_days
from heliox_orchestration.db.engine import make_engine, mask_url
from heliox_orchestration.detections.idle import idle_candidates_query, idle_window
from heliox_orchestration.ingest.demo_fleet import FleetSpec
from heliox_orchestration.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
SERVER_URL = os.environ.get(
    "HELIOX_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
FULL_GPUS, FULL_DAYS = 10_000, 90
QUICK_GPUS, QUICK_DAYS = 200, 16
HISTORY_DAYS = 7
BACKFILL_DAYS = 30
END_DATE = dt.date(2026, 1, 20)  # the fixed "today": the last seeded day and the refreshed partition
SEED = 42
TIMEZONE = "UTC"
DEFAULT_REPEAT = 5
# Each round of the 30-day backfill rewrites 29 days' rollup twice (one run, 30 runs): minutes.
BACKFILL_MAX_REPEAT = 3
NAIVE_MAX_REPEAT = 3  # the naive 14-day read takes ~half a minute and GBs: three runs are plenty


@dataclasses.dataclass(frozen=True)
class Goal:
    id: str
    name: str
    value: float | bool
    op: str  # "<=", ">=" or "is"
    target: float | bool
    unit: str = "x"

    @property
    def met(self) -> bool:
        if self.op == "<=":
            return float(self.value) <= float(self.target)
        if self.op == ">=":
            return float(self.value) >= float(self.target)
        return self.value is self.target

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "met": self.met}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- processes ---------------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    """The environment of every child: no developer secrets or Heliox settings leak in."""
    drop = {"SLACK_WEBHOOK_URL", "HELIOX_DATABASE_URL", "TIMEZONE", "DAGSTER_HOME"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def run_process(argv: list[str], log_path: Path) -> float:
    """Run a child to completion; its wall seconds (interpreter start-up included)."""
    with log_path.open("ab") as out:
        began = time.perf_counter()
        proc = subprocess.run(argv, cwd=ROOT, stdout=out, stderr=out, env=_child_env(), check=False)
        seconds = time.perf_counter() - began
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(argv[:4])} failed with exit code {proc.returncode}:\n{tail}")
    return seconds


def run_worker(module: str, params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """A measured task in a fresh process: its JSON answer, with the peak RSS (VmHWM) the
    process reports of itself. (Not wait4's ru_maxrss: Linux carries the parent's high-water
    mark across fork and exec into the child's, so every child would look at least as big as
    this driver.)"""
    name = f"{module.rsplit('.', 1)[-1]}-{params['task']}"
    result_path = workdir / f"{name}.json"
    seconds = run_process(
        [sys.executable, "-m", module, json.dumps(params), str(result_path)], workdir / f"{name}.log"
    )
    result: dict[str, Any] = json.loads(result_path.read_text())
    return {**result, "process_s": seconds, "process_peak_rss_mb": result["peak_rss_mb"]}


def import_times(runs: int, workdir: Path, *, warmup: bool = True) -> dict[str, Any]:
    """Fresh interpreters importing dagster or the code location, alternated, after a warm-up
    pair (which loads the files into the page cache)."""
    statements = {
        "dagster": "import dagster",
        "definitions": "import heliox_orchestration.definitions",
    }
    samples: dict[str, list[float]] = {name: [] for name in statements}
    for i in range(runs + warmup):
        for name, statement in statements.items():
            seconds = run_process([sys.executable, "-c", statement], workdir / "imports.log")
            if i or not warmup:
                samples[name].append(seconds)
    return {"samples": samples, "median": {name: median(values) for name, values in samples.items()}}


# --- databases ---------------------------------------------------------------------------------


def database_urls(args: argparse.Namespace, gpus: int, days: int) -> tuple[str, str, list[str]]:
    """(main URL, 7-day history URL, databases to drop at the end)."""
    if args.database_url:
        main = args.database_url
        history = args.history_database_url or str(
            make_url(main)
            .set(database=f"{make_url(main).database}_{HISTORY_DAYS}d")
            .render_as_string(hide_password=False)
        )
    elif args.quick:
        # A fresh pair of databases for the smoke test, dropped when it ends.
        stem = f"heliox_bench_quick_{uuid.uuid4().hex[:8]}"
        main, history = (
            make_url(SERVER_URL).set(database=f"{stem}_{n}d").render_as_string(hide_password=False)
            for n in (days, HISTORY_DAYS)
        )
    else:
        fleet = "" if gpus == FULL_GPUS else f"{gpus}gpus_"
        main, history = (
            make_url(SERVER_URL)
            .set(database=f"heliox_bench_{fleet}{n}d")
            .render_as_string(hide_password=False)
            for n in (days, HISTORY_DAYS)
        )
    temporary: list[str] = []
    if args.quick:
        # A quick run drops the databases it created (never one it was given).
        given = {args.database_url, args.history_database_url}
        temporary = [url for url in (main, history) if url not in given and create_database_if_missing(url)]
    return main, history, temporary


def explain(url: str, query: Executable) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of a SQLAlchemy query, as PostgreSQL prints it."""
    engine = make_engine(url)
    try:
        compiled = query.compile(dialect=engine.dialect)  # type: ignore[attr-defined]
        with engine.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + compiled.string, compiled.params)
            return "\n".join(row[0] for row in cursor.fetchall())
    finally:
        engine.dispose()


def server_facts(url: str) -> dict[str, Any]:
    """The server's own settings (a plain engine: make_engine's session settings left out),
    and the ones Heliox's engine sets for its sessions."""
    engine = create_engine(url)
    names = (
        "server_version",
        "shared_buffers",
        "work_mem",
        "effective_cache_size",
        "max_parallel_workers_per_gather",
        "random_page_cost",
        "jit",
    )
    try:
        with engine.connect() as conn:
            server = {name: conn.execute(text(f"SHOW {name}")).scalar_one() for name in names}
    finally:
        engine.dispose()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            session = {"jit": conn.execute(text("SHOW jit")).scalar_one()}
    finally:
        engine.dispose()
    return {**server, "heliox_session": session}


def machine_facts() -> dict[str, Any]:
    try:
        meminfo = Path("/proc/meminfo").read_text().split()
        mem_gib = round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1)
    except (OSError, ValueError):
        mem_gib = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    return {
        "cpus": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        **{name: metadata.version(name) for name in ("dagster", "pandas", "sqlalchemy")},
        "commit": commit,
        "worktree_dirty": dirty,
        "load_average": os.getloadavg(),
    }


# --- the benchmark -----------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    gpus = args.gpus or (QUICK_GPUS if args.quick else FULL_GPUS)
    days = args.days or (QUICK_DAYS if args.quick else FULL_DAYS)
    settings = Settings(timezone=TIMEZONE)
    if days <= max(HISTORY_DAYS, settings.idle_lookback_days):
        raise SystemExit(f"--days must be more than {max(HISTORY_DAYS, settings.idle_lookback_days)}")
    repeat = args.repeat or (1 if args.quick else DEFAULT_REPEAT)
    end_date: dt.date = args.end_date or END_DATE
    today = end_date.isoformat()
    # Evaluated the moment today's last hour completed: the idle window is the 14 days ending today.
    as_of = dt.datetime.combine(end_date + dt.timedelta(days=1), dt.time(), dt.UTC)
    backfill_days = min(BACKFILL_DAYS, days)
    first_backfill_day = end_date - dt.timedelta(days=backfill_days - 1)

    main_url, history_url, temporary = database_urls(args, gpus, days)
    started = dt.datetime.now(dt.UTC)
    machine = machine_facts()
    try:
        prepared: dict[str, Prepared] = {}
        for label, url, n in (("main", main_url, days), ("history", history_url, HISTORY_DAYS)):
            spec = FleetSpec(gpus=gpus, days=n, end_date=end_date, seed=SEED, timezone=TIMEZONE)
            prepared[label] = prepare_database(url, spec, log=log)
        if args.prepare_only:
            return {"prepared": {k: _prepared_dict(p) for k, p in prepared.items()}}
        postgres = server_facts(main_url)
        with tempfile.TemporaryDirectory(prefix="heliox-bench-") as tmp:
            result = _measure(
                settings,
                prepared,
                Path(tmp),
                repeat=repeat,
                today=today,
                as_of=as_of,
                first_backfill_day=first_backfill_day,
                naive_repeat=min(repeat, NAIVE_MAX_REPEAT),
                quick=args.quick,
            )
            # Issue 18 (benchmarks/storage_goal.py): storage, fresh-process runs, retention, G4.
            g4_url = args.g4_database_url or (
                make_url(SERVER_URL)
                .set(database=f"heliox_bench_{G4_GPUS}gpus_{G4_DAYS}d")
                .render_as_string(hide_password=False)
            )
            p = result["raw"]["partition"]["median"]
            measurements, goals = storage_section(
                main_url=main_url,
                today=today,
                workdir=Path(tmp),
                repeat=repeat,
                plans=result["plans"],
                warm={"materialization_s": p["main.materialization_s"], "step_s": p["main.step_s"]},
                refresh_ratio=result["measurements"]["history_growth"]["refresh_ratio"],
                g4=(lambda: g4_fleet(g4_url, end_date, SEED, Path(tmp), repeat, run_worker, log))
                if args.g4
                else None,
                log=log,
            )
            result["measurements"].update(measurements)
            result["goals"] += [Goal(*goal) for goal in goals]
            ingest = measure_ingest(Path(tmp), SERVER_URL, quick=args.quick, run_process=run_process, log=log)
            result["measurements"]["focus_import"] = ingest.measurements
            result["raw"]["focus_import"] = ingest.raw
            result["goals"] += [Goal(*goal) for goal in ingest.goals]
    finally:
        for url in temporary:
            drop_database(url)
    goals = result.pop("goals")
    return {
        "benchmark": "heliox fleet scale (issue 7)",
        "mode": "quick" if args.quick else "full",
        "goals_enforced": not args.quick,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "repeat": repeat,
        "machine": {**machine, "load_average_end": os.getloadavg()},
        "postgres": postgres,
        "fleet": {
            "gpus": gpus,
            "days": days,
            "history_days": HISTORY_DAYS,
            "end_date": today,
            "today_partition": today,
            "idle_as_of": as_of.isoformat(),
            "timezone": TIMEZONE,
            "seed": SEED,
            "databases": {k: _prepared_dict(p) for k, p in prepared.items()},
        },
        **result,
        "goals": [g.as_dict() for g in goals],
        "all_goals_met": all(g.met for g in goals),
    }


def _prepared_dict(p: Prepared) -> dict[str, Any]:
    return {
        "url": mask_url(p.url),
        "gpus": p.spec.gpus,
        "days": p.spec.days,
        "usage_rows": p.rows,
        "reused": p.reused,
        "seed_seconds": round(p.seed_seconds, 1),
        "table_mb": round(p.table_mb, 1),
        "indexes_mb": round(p.index_mb, 1),
    }


def _measure(
    settings: Settings,
    prepared: dict[str, Prepared],
    workdir: Path,
    *,
    repeat: int,
    today: str,
    as_of: dt.datetime,
    first_backfill_day: dt.date,
    naive_repeat: int,
    quick: bool,
) -> dict[str, Any]:
    main_url, history_url = prepared["main"].url, prepared["history"].url
    labels = {"main": f"{prepared['main'].spec.days}d", "history": f"{prepared['history'].spec.days}d"}
    window = idle_window(settings, as_of)
    day = dt.date.fromisoformat(today)
    day_bounds = local_days(day, day, settings.timezone)[0]
    common = {"timezone": settings.timezone, "repeat": repeat}

    log("(6) definition load: fresh interpreters")
    # Interpreter start-up varies by tens of milliseconds from one process to the next: more pairs.
    imports = (
        import_times(repeat, workdir, warmup=False) if quick else import_times(max(2 * repeat, 10), workdir)
    )

    log(f"(1)(3) today's partition {today} on {labels['main']} and {labels['history']}, interleaved")
    part = run_worker(
        "benchmarks.worker",
        {**common, "task": "partition", "today": today, "urls": {"main": main_url, "history": history_url}},
        workdir,
    )
    log("(4) idle_gpu_recommendations over the 14-day window")
    idle = run_worker(
        "benchmarks.worker", {**common, "task": "idle", "url": main_url, "as_of": as_of.isoformat()}, workdir
    )
    naive_params = {**common, "url": main_url, "repeat": naive_repeat}
    log("(2) naive pandas: one day")
    naive_day = run_worker(
        "benchmarks.naive",
        {
            **naive_params,
            "task": "daily",
            "start": day_bounds.start.isoformat(),
            "end": day_bounds.end.isoformat(),
        },
        workdir,
    )
    log("(2) naive pandas: the 14-day idle window")
    naive_idle = run_worker(
        "benchmarks.naive",
        {
            **naive_params,
            "task": "idle",
            "start": window.start.isoformat(),
            "end": window.end.isoformat(),
            "idle_utilization_pct": str(settings.idle_utilization_pct),
            "idle_min_observed_hours": settings.idle_min_observed_hours,
            "idle_min_idle_share_pct": str(settings.idle_min_idle_share_pct),
        },
        workdir,
    )
    log(f"(5) backfill {first_backfill_day}..{today}")
    backfill = run_worker(
        "benchmarks.worker",
        {
            **common,
            "repeat": min(repeat, BACKFILL_MAX_REPEAT),
            "task": "backfill",
            "url": main_url,
            "first": first_backfill_day.isoformat(),
            "last": today,
        },
        workdir,
    )
    log("query plans: EXPLAIN (ANALYZE, BUFFERS)")
    day_query = daily_costs_query(local_days(day, day, settings.timezone))
    plans = {
        f"day_query_{labels['main']}": explain(main_url, day_query),
        f"day_query_{labels['history']}": explain(history_url, day_query),
        f"idle_query_{labels['main']}": explain(main_url, idle_candidates_query(window, settings)),
        f"backfill_query_{labels['main']}": explain(
            main_url, daily_costs_query(local_days(first_backfill_day, day, settings.timezone))
        ),
    }
    summary = _summarize(labels, imports, part, idle, naive_day, naive_idle, backfill, plans)
    log("(G1) idle_gpu_recommendations on the daily rollup")
    rollup = rollup_goal.measure(run_worker, main_url, as_of, settings.timezone, repeat, workdir)
    return rollup_goal.extend(summary, rollup, Goal)


def _summarize(
    labels: dict[str, str],
    imports: dict[str, Any],
    part: dict[str, Any],
    idle: dict[str, Any],
    naive_day: dict[str, Any],
    naive_idle: dict[str, Any],
    backfill: dict[str, Any],
    plans: dict[str, str],
) -> dict[str, Any]:
    p, i, b = part["median"], idle["median"], backfill["median"]

    def paired(result: dict[str, Any], numerator: str, denominator: str) -> float:
        """The median of the per-round ratios: both sides were measured in the same round, one
        right after the other, so a slower or faster machine that round cancels out."""
        samples = result["samples"]
        return median([a / b for a, b in zip(samples[numerator], samples[denominator], strict=True)])

    main, hist = labels["main"], labels["history"]
    daily = {
        "bare_query_s": p["main.bare_query_s"],
        "step_compute_s": p["main.step_s"],
        "materialization_s": p["main.materialization_s"],
        "dagster_fixed_overhead_s": p["main.trivial_s"],
        "materialization_minus_step_s": p["main.materialization_s"] - p["main.step_s"],
        "step_minus_bare_query_s": p["main.step_s"] - p["main.bare_query_s"],
        "step_vs_bare_ratio": paired(part, "main.step_s", "main.bare_query_s"),
        "day_usage_rows": naive_day["raw_rows"],
        "aggregate_rows": part["counts"]["main.query_rows"],
        "rows_written": part["counts"]["main.rows_written"],
        "burn_rate_refresh_with_checks_s": p["main.refresh_s"],
    }
    # Issue 18: the nightly refresh of yesterday, which also writes the day's per-resource rollup.
    nightly = {
        "step_s": p["yesterday.step_s"],
        "bare_sql_s": p["yesterday.bare_query_s"],
        "step_vs_bare_ratio": paired(part, "yesterday.step_s", "yesterday.bare_query_s"),
        "rollup_write_s": p["yesterday.rollup_write_s"],
        "cost_query_s": p["yesterday.cost_query_s"],
        "rollup_write_vs_cost_query_ratio": paired(
            part, "yesterday.rollup_write_s", "yesterday.cost_query_s"
        ),
    }
    naive = {
        "one_day_naive_s": naive_day["median_s"],
        "one_day_project_s": p["main.materialization_s"],
        "one_day_speedup": naive_day["median_s"] / p["main.materialization_s"],
        "one_day_naive_peak_rss_mb": naive_day["process_peak_rss_mb"],
        "one_day_project_peak_rss_mb": part["process_peak_rss_mb"],
        "one_day_raw_rows": naive_day["raw_rows"],
        "window_naive_s": naive_idle["median_s"],
        "window_project_s": i["materialization_s"],
        "window_speedup": naive_idle["median_s"] / i["materialization_s"],
        "window_naive_peak_rss_mb": naive_idle["process_peak_rss_mb"],
        "window_project_peak_rss_mb": idle["process_peak_rss_mb"],
        "window_memory_ratio": naive_idle["process_peak_rss_mb"] / idle["process_peak_rss_mb"],
        "window_raw_rows": naive_idle["raw_rows"],
        "window_naive_findings": naive_idle["result_rows"],
        "window_project_findings": idle["counts"]["findings"],
        "naive_runs": len(naive_idle["seconds"]),
    }
    history = {
        f"refresh_{main}_s": p["main.refresh_s"],
        f"refresh_{hist}_s": p["history.refresh_s"],
        "refresh_ratio": paired(part, "main.refresh_s", "history.refresh_s"),
        f"step_{main}_s": p["main.refresh_step_s"],
        f"step_{hist}_s": p["history.refresh_step_s"],
        "step_ratio": paired(part, "main.refresh_step_s", "history.refresh_step_s"),
        f"bare_query_{main}_s": p["main.bare_query_s"],
        f"bare_query_{hist}_s": p["history.bare_query_s"],
        "bare_query_ratio": paired(part, "main.bare_query_s", "history.bare_query_s"),
        f"day_query_uses_usage_hour_index_{main}": uses_usage_hour_index(plans[f"day_query_{main}"]),
        f"day_query_uses_usage_hour_index_{hist}": uses_usage_hour_index(plans[f"day_query_{hist}"]),
    }
    # Since issue 18 the window's past days are rolled up first, as the nightly refreshes leave
    # them; the same step with no usable rollup (every hour read raw) is reported as the fallback.
    idle_m = {
        "bare_query_s": i["bare_query_s"],
        "step_compute_s": i["step_s"],
        "materialization_s": i["materialization_s"],
        "materialization_vs_bare_ratio": paired(idle, "materialization_s", "bare_query_s"),
        "process_peak_rss_mb": idle["process_peak_rss_mb"],
        "window_usage_rows": naive_idle["raw_rows"],
        "findings": idle["counts"]["findings"],
        "rollup_setup_s": idle["rollup_setup_s"],
        "fallback_all_raw_materialization_s": i["fallback.materialization_s"],
        "fallback_all_raw_vs_bare_ratio": paired(idle, "fallback.materialization_s", "fallback.bare_query_s"),
        "fallback_findings": idle["counts"]["fallback_findings"],
    }
    days = backfill["counts"]["days"]
    backfill_m = {
        "days": days,
        "bare_query_s": b["bare_query_s"],
        "single_run_s": b["single_run_s"],
        "single_run_step_s": b["single_run_step_s"],
        "single_run_vs_bare_ratio": paired(backfill, "single_run_s", "bare_query_s"),
        "separate_runs_s": b["separate_runs_s"],
        "separate_runs_vs_single_run_ratio": paired(backfill, "separate_runs_s", "single_run_s"),
        "rows_written": backfill["counts"]["rows_written"],
        "rolled_up_days": backfill["counts"]["rolled_up_days"],
        "rounds": len(backfill["samples"]["single_run_s"]),
    }
    im = imports["median"]
    load = {
        "import_dagster_s": im["dagster"],
        "import_definitions_s": im["definitions"],
        "ratio": paired(imports, "definitions", "dagster"),
        "runs": len(imports["samples"]["dagster"]),
    }
    uses_index = bool(
        history[f"day_query_uses_usage_hour_index_{main}"]
        and history[f"day_query_uses_usage_hour_index_{hist}"]
    )
    goals = [
        Goal("1", "daily_gpu_costs step / bare day query", daily["step_vs_bare_ratio"], "<=", 1.5),
        Goal("2a", "naive / project time, 14-day window", naive["window_speedup"], ">=", 10),
        Goal("2b", "naive / project peak RSS, 14-day window", naive["window_memory_ratio"], ">=", 5),
        Goal("2c", "naive / project time, one day", naive["one_day_speedup"], ">=", 3),
        Goal("3a", f"today's refresh, {main} / {hist} history", history["refresh_ratio"], "<=", 1.2),
        Goal("3b", "day query uses the usage_hour index (both)", uses_index, "is", True, unit=""),
        Goal(
            "4a", "idle materialization / bare idle query", idle_m["materialization_vs_bare_ratio"], "<=", 1.5
        ),
        Goal("4b", "idle materializing process peak RSS", idle_m["process_peak_rss_mb"], "<=", 400, "MB"),
        Goal(
            "5",
            f"{days}-day single-run backfill / bare SQL",
            backfill_m["single_run_vs_bare_ratio"],
            "<=",
            1.3,
        ),
    ]
    return {
        "measurements": {
            "daily_partition": daily,
            "nightly_refresh": nightly,
            "naive": naive,
            "history_growth": history,
            "idle_recommendations": idle_m,
            "backfill": backfill_m,
            "definition_load": load,
        },
        "raw": {
            "partition": part,
            "idle": idle,
            "naive_day": naive_day,
            "naive_window": naive_idle,
            "backfill": backfill,
            "imports": imports,
        },
        "plans": plans,
        "goals": goals,
    }


# --- output ------------------------------------------------------------------------------------


def _fmt(value: Any, unit: str = "") -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}{unit}" if abs(value) < 10 else f"{value:,.1f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return str(value)


def render_table(report: dict[str, Any]) -> str:
    fleet = report["fleet"]
    lines = [
        f"Heliox fleet benchmark ({report['mode']}): {fleet['gpus']:,} GPUs x {fleet['days']} days "
        f"vs {fleet['history_days']} days, today = {fleet['today_partition']}, "
        f"median of {report['repeat']} rounds, commit {report['machine']['commit']}",
        "",
    ]
    for name, values in report["measurements"].items():
        lines.append(f"{name}")
        for key, value in values.items():
            unit = " s" if key.endswith("_s") else (" MB" if key.endswith("_mb") else "")
            lines.append(f"  {key:<46} {_fmt(value, unit):>14}")
    lines += ["", f"{'goal':<4} {'':<46} {'value':>10} {'target':>10}  status"]
    for g in report["goals"]:
        target = f"{g['op']} {_fmt(g['target'])}{g['unit']}"
        status = "met" if g["met"] else ("MISSED" if report["goals_enforced"] else "missed (not enforced)")
        lines.append(
            f"{g['id']:<4} {g['name']:<46} {_fmt(g['value']) + g['unit']:>10} {target:>10}  {status}"
        )
    verdict = "all goals met" if report["all_goals_met"] else "goals missed"
    lines.append(f"\n{verdict}{'' if report['goals_enforced'] else ' (quick mode: goals not enforced)'}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, help=f"fleet size (default {FULL_GPUS:,}; quick {QUICK_GPUS})")
    parser.add_argument("--days", type=int, help=f"days of history (default {FULL_DAYS}; quick {QUICK_DAYS})")
    parser.add_argument("--quick", action="store_true", help="tiny fleet on fresh databases: a smoke test")
    parser.add_argument(
        "--json", action="store_true", help="print the JSON report (the table goes to stderr)"
    )
    parser.add_argument("--repeat", type=int, help=f"timed rounds per measurement (default {DEFAULT_REPEAT})")
    parser.add_argument("--database-url", help="the main (N-day) database (default heliox_bench_<N>d)")
    parser.add_argument(
        "--history-database-url", help=f"the {HISTORY_DAYS}-day database (default: the main one's name + _7d)"
    )
    parser.add_argument(
        "--end-date", type=dt.date.fromisoformat, help=f"the fixed today (default {END_DATE})"
    )
    parser.add_argument("--prepare-only", action="store_true", help="seed or verify the databases, then exit")
    parser.add_argument(
        "--g4",
        action="store_true",
        help=f"also G4: {G4_GPUS:,} GPUs x {G4_DAYS} days in its own database (seeded once, ~30 min)",
    )
    parser.add_argument(
        "--g4-database-url", help=f"the G4 database (default heliox_bench_{G4_GPUS}gpus_{G4_DAYS}d)"
    )
    args = parser.parse_args(argv)
    for name in ("gpus", "days", "repeat"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run_benchmark(args)
    if args.prepare_only:
        print(json.dumps(report, indent=2))
        return 0
    if not args.quick:  # a full run is kept (git-ignored); a smoke test leaves nothing behind
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = report["started_at"].replace(":", "").replace("-", "")[:15]
        (RESULTS_DIR / f"{stamp}-full.json").write_text(json.dumps(report, indent=2, default=str))
    table = render_table(report)
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(report, indent=2, default=str))
    else:
        print(table)
    return 0 if report["all_goals_met"] or not report["goals_enforced"] else 1


if __name__ == "__main__":
    sys.exit(main())
