"""The first start as a new user meets it (issue 14): a fresh clone of this checkout's HEAD,
``make run`` with pip's cache off, each phase timed, then the Dagster UI asked every 30 s for five
minutes what the user would see (the demo window's partitions, the three alert jobs' runs), then
Ctrl-C (SIGINT to the process group, as a terminal sends it) timed until no process is left.

    python -m benchmarks.first_start [--port 3222] [--minutes 5] [--workdir /tmp/heliox-first-start]

Prints one line per phase and per poll; exits 1 if the UI never answered or an alert job had not
succeeded by the end. Run it on a quiet machine: it measures wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ALERT_JOBS = ("burn_rate_alert_job", "idle_spend_alert_job", "daily_summary_job")
RUNS = "{ runsOrError { ... on Runs { results { jobName status } } } }"
PARTITIONS = "{ assetNodes { assetKey { path } partitionStats { numMaterialized numPartitions } } }"


def graphql(port: int, query: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.load(response)["data"]


def answering(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
            return True
    except OSError:
        return False


def session_pids(sid: int) -> list[int]:
    """The processes of the session ``make run`` leads (start_new_session), from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state, ppid, pgrp, session. A zombie has ended (``make`` itself,
        # until this process reaps it).
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=3222)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/heliox-first-start"))
    args = parser.parse_args()
    clone = args.workdir
    shutil.rmtree(clone, ignore_errors=True)
    began = time.monotonic()

    def at() -> str:
        return f"{time.monotonic() - began:6.1f} s"

    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1"}
    env.pop("HELIOX_DATABASE_URL", None)
    env.pop("DAGSTER_HOME", None)
    log = (clone.parent / f"{clone.name}.log").open("w")
    make = subprocess.Popen(
        ["make", "run", f"PORT={args.port}"],
        cwd=clone,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    installed = False
    while not answering(args.port):
        if not installed and (clone / ".venv" / ".installed-runtime").exists():
            installed = True
            print(f"{at()}  runtime packages installed", flush=True)
        if make.poll() is not None or time.monotonic() - began > 900:
            print(f"{at()}  the UI never answered (see {log.name})")
            return 1
        time.sleep(0.2)
    print(f"{at()}  UI answering on port {args.port}", flush=True)
    ok = False
    while time.monotonic() - began < args.minutes * 60:
        time.sleep(30)
        runs: dict[str, list[str]] = {}
        for run in graphql(args.port, RUNS)["runsOrError"]["results"]:
            runs.setdefault(run["jobName"], []).append(run["status"])
        filled = {
            "/".join(
                a["assetKey"]["path"]
            ): f"{a['partitionStats']['numMaterialized']}/{a['partitionStats']['numPartitions']}"
            for a in graphql(args.port, PARTITIONS)["assetNodes"]
            if a["partitionStats"]
        }
        ok = all("SUCCESS" in runs.get(job, []) for job in ALERT_JOBS)
        print(
            f"{at()}  " + "; ".join(f"{job}: {runs.get(job, [])}" for job in ALERT_JOBS), filled, flush=True
        )
    stop = time.monotonic()
    os.killpg(make.pid, signal.SIGINT)
    while session_pids(make.pid) and time.monotonic() - stop < 60:
        time.sleep(0.1)
    left = session_pids(make.pid)
    ended = "every process ended" if not left else f"{len(left)} processes left"
    print(f"Ctrl-C: {time.monotonic() - stop:.1f} s until {ended}")
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return 0 if ok and not left else 1


if __name__ == "__main__":
    sys.exit(main())
