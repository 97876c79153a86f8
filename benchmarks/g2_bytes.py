"""G2 alone, at any size: bytes per usage row (table + all indexes) and the day query's plan.

    python -m benchmarks.g2_bytes [--gpus 1000] [--days 14] [--database-url URL]

Seeds (or reuses) a benchmark database the way ``benchmarks.run`` does (rows rewritten in time
order, indexes built once) and prints its sizes, the EXPLAIN (ANALYZE, BUFFERS) of the last day's
cost query and that query's median seconds over five runs. Bytes per row barely depend on the
fleet size (1,000 GPUs x 14 days is within 1% of 10,000 x 90), so this is the quick check.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time

from benchmarks.run import SERVER_URL, explain
from benchmarks.seeding import prepare_database, with_database
from benchmarks.storage_goal import storage_facts, uses_usage_hour_index
from heliox_orchestration.costs.daily_costs import daily_costs_query, local_days
from heliox_orchestration.db.engine import make_engine
from heliox_orchestration.ingest.demo_fleet import FleetSpec

END_DATE = dt.date(2026, 1, 20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=1000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--database-url", help="default: heliox_bench_g2_<gpus>x<days> on the server")
    args = parser.parse_args(argv)
    url = args.database_url or with_database(SERVER_URL, f"heliox_bench_g2_{args.gpus}x{args.days}")
    spec = FleetSpec(gpus=args.gpus, days=args.days, end_date=END_DATE, timezone="UTC")
    prepare_database(url, spec)
    facts = storage_facts(url)
    query = daily_costs_query(local_days(END_DATE, END_DATE, "UTC"))
    plan = explain(url, query)
    engine = make_engine(url)
    seconds = []
    try:
        for _ in range(5):
            began = time.perf_counter()
            with engine.connect() as conn:
                conn.execute(query).all()
            seconds.append(time.perf_counter() - began)
    finally:
        engine.dispose()
    facts["day_query_s"] = sorted(seconds)[2]
    facts["day_query_uses_usage_hour_index"] = uses_usage_hour_index(plan)
    print(plan)
    print(json.dumps(facts, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
