"""The Prometheus/DCGM source against a real Prometheus server (prometheus_server.py) holding
fifteen days of DCGM history (dcgm_history.py): hourly means, gaps, GPUs coming and going,
label changes, MIG, chunking, authentication and the one-line errors."""

from __future__ import annotations

import datetime as dt
import socket
from base64 import b64encode
from collections.abc import Iterator
from fractions import Fraction

import pandas as pd
import pytest
import yaml

from heliox_orchestration.ingest.dcgm_mapping import ENGINE_ACTIVE, GPU_UTIL, DcgmMapping, parse_mapping
from heliox_orchestration.ingest.prometheus import PrometheusClient, PrometheusError
from heliox_orchestration.ingest.telemetry import fetch_utilization
from heliox_orchestration_tests.dcgm_history import (
    BUSY_HOST,
    DAYS,
    GROW,
    IDLE_HOST,
    MAPPING_YAML,
    MIG,
    MIXED,
    START,
    SWAP,
    Expected,
    at,
    build_history,
    expected_hours,
)
from heliox_orchestration_tests.prometheus_server import PASSWORD, USERNAME, AuthGateway, PrometheusServer

END = START + dt.timedelta(days=DAYS)
TOKEN = "tkn-7f3a9c1e5b2d8f4a6c0e"


def mapping(**overrides: object) -> DcgmMapping:
    return parse_mapping({**yaml.safe_load(MAPPING_YAML), **overrides}, "test")


@pytest.fixture(scope="module")
def client(prometheus_server: PrometheusServer) -> Iterator[PrometheusClient]:
    with PrometheusClient(prometheus_server.url, username=USERNAME, password=PASSWORD) as c:
        yield c


def fetch(
    client: PrometheusClient, m: DcgmMapping, start: dt.datetime, end: dt.datetime, **kw: object
) -> pd.DataFrame:
    chunks = list(fetch_utilization(client, m, start, end, **kw))  # type: ignore[arg-type]
    return pd.concat([c.hours for c in chunks], ignore_index=True)


@pytest.fixture(scope="module")
def fetched(client: PrometheusClient) -> pd.DataFrame:
    """The whole history, in the default chunks of 24 hours."""
    return fetch(client, mapping(), START, END)


@pytest.fixture(scope="module")
def expected() -> dict[tuple[str, dt.datetime], Expected]:
    return expected_hours(build_history())


def by_key(frame: pd.DataFrame) -> dict[tuple[str, dt.datetime], dict[str, object]]:
    return {(r["resource_id"], r["usage_hour"].to_pydatetime()): r for r in frame.to_dict("records")}


def hour_of(frame: pd.DataFrame, resource_id: str, hour: dt.datetime) -> dict[str, object] | None:
    return by_key(frame).get((resource_id, hour))


def test_every_hourly_mean_is_the_documented_mean_of_the_samples(
    fetched: pd.DataFrame, expected: dict[tuple[str, dt.datetime], Expected]
) -> None:
    got = by_key(fetched)
    assert set(got) == set(expected)
    assert len(got) == 6 * 360 - 3  # the mixed host's gap hours are missing, nothing else
    for key, want in expected.items():
        row = got[key]
        # Stored to the hundredth: within half a hundredth of the exact mean.
        assert abs(Fraction(str(row["utilization_pct"])) - want.utilization) <= Fraction(1, 200), key
        assert row["gpus"] == want.gpus, key
        assert abs(row["coverage"] - float(want.coverage)) < 1e-4, key


def test_idle_and_busy_hosts(fetched: pd.DataFrame) -> None:
    mean = fetched.groupby("resource_id")["utilization_pct"].agg(["min", "max"])
    assert mean.loc[IDLE_HOST, "max"] < 5  # idle every hour
    assert mean.loc[BUSY_HOST, "min"] > 50
    swap = fetched[fetched["resource_id"] == SWAP].set_index("usage_hour")["utilization_pct"]
    assert swap[swap.index < at(10, 0)].max() < 5 and swap[swap.index >= at(10, 0)].min() > 50


def test_a_scrape_gap_is_a_gap_not_zero(
    fetched: pd.DataFrame, expected: dict[tuple[str, dt.datetime], Expected]
) -> None:
    # Not scraped 10:20-12:50: 10:00 had 20 minutes and 12:00 had 10 (< half), 11:00 none.
    for hour in (at(5, 10), at(5, 11), at(5, 12)):
        assert hour_of(fetched, MIXED, hour) is None
    assert hour_of(fetched, MIXED, at(5, 13)) is not None
    # Not scraped 08:00-08:25: the hour counts, as the mean of the 35 minutes present.
    partial = hour_of(fetched, MIXED, at(7, 8))
    assert partial is not None and partial["coverage"] == pytest.approx(35 / 60, abs=1e-4)
    assert partial["gpus"] == 8
    assert partial["utilization_pct"] == pytest.approx(
        float(expected[(MIXED, at(7, 8))].utilization), abs=0.005
    )


def test_a_gpu_appearing_mid_window_counts_from_the_hour_it_is_scraped(fetched: pd.DataFrame) -> None:
    grow = fetched[fetched["resource_id"] == GROW].set_index("usage_hour")
    assert set(grow.loc[grow.index < at(6, 9), "gpus"]) == {7}
    # The eighth GPU appears at 09:20: 40 minutes of the hour, enough to count, weighted 2/3.
    assert grow.loc[at(6, 9), "gpus"] == 8
    assert grow.loc[at(6, 9), "coverage"] == pytest.approx((7 + 2 / 3) / 8, abs=1e-4)
    assert set(grow.loc[grow.index > at(6, 9), "gpus"]) == {8}


def test_label_changes_neither_split_nor_merge_resources(fetched: pd.DataFrame) -> None:
    assert set(fetched["resource_id"]) == {BUSY_HOST, IDLE_HOST, MIXED, GROW, MIG, SWAP}
    mixed = fetched[fetched["resource_id"] == MIXED].set_index("usage_hour")
    # GPU 1 moved to team-b's pod at 14:40: its two series are one GPU, the hour has 8 GPUs.
    assert mixed.loc[at(8, 14), "gpus"] == 8 and mixed.loc[at(8, 14), "coverage"] == 1
    # The unallocated GPUs carry the exporter's own pod in `pod`: never taken for a workload.
    assert set(mixed["model_name"]) == {"whisper-large"} and set(mixed["team"]) == {"team-a"}
    assert set(mixed["resource_label"]) == {"Hostname=gpu-mixed-01"}
    # Host swap: new UUIDs and modelName, same host: one resource, 8 GPUs on both sides.
    swap = fetched[fetched["resource_id"] == SWAP].set_index("usage_hour")
    assert set(swap["gpus"]) == {8}
    assert set(swap.loc[swap.index < at(10, 0), "gpu_type"]) == {"A100-80GB"}
    assert set(swap.loc[swap.index >= at(10, 0), "gpu_type"]) == {"H100"}
    assert set(swap["resource_label"]) == {"instance=10.0.7.7:9400"}
    grow = fetched[fetched["resource_id"] == GROW]
    assert set(grow["resource_label"]) == {"hostname=gpu-grow-01"} and set(grow["gpu_type"]) == {"T4"}


def test_mig_host_reads_engine_active_times_100(fetched: pd.DataFrame, client: PrometheusClient) -> None:
    mig = fetched[fetched["resource_id"] == MIG]
    assert set(mig["metric"]) == {ENGINE_ACTIVE} and set(mig["gpus"]) == {8}
    assert set(fetched.loc[fetched["resource_id"] != MIG, "metric"]) == {GPU_UTIL}
    assert 30 < mig["utilization_pct"].mean() < 70  # a percentage, not a 0-1 ratio
    assert set(mig["model_name"]) == {"llm-eval"} and set(mig["team"]) == {"research"}
    # Without engine_active_resources the MIG host, which has no DCGM_FI_DEV_GPU_UTIL, is absent.
    default = fetch(client, mapping(engine_active_resources=[]), at(3, 0), at(3, 6))
    assert MIG not in set(default["resource_id"]) and len(set(default["resource_id"])) == 5


def test_small_chunks_give_the_same_hours_as_one_query(
    client: PrometheusClient, fetched: pd.DataFrame
) -> None:
    start, end = at(5, 0), at(8, 0)
    calls: list[tuple[int, int]] = []
    small = fetch(
        client,
        mapping(hours_per_query=5, resources_per_query=1),
        start,
        end,
        progress=lambda done, total: calls.append((done, total)),
    )
    one = fetch(client, mapping(hours_per_query=1000), start, end)
    window = fetched[(fetched["usage_hour"] >= start) & (fetched["usage_hour"] < end)]
    key = ["resource_id", "usage_hour"]
    for other in (one, window):
        pd.testing.assert_frame_equal(
            small.sort_values(key).reset_index(drop=True), other.sort_values(key).reset_index(drop=True)
        )
    # 15 chunks of 5 hours x 6 batches of one resource each: one progress call per request.
    assert calls[0] == (0, 90) and calls[-1] == (90, 90) and len(calls) == 91


def test_basic_auth_for_real_and_a_wrong_password_is_one_clean_line(
    prometheus_server: PrometheusServer,
) -> None:
    wrong = "not-the-password-9d8c7b"
    cases = [
        (
            PrometheusClient(prometheus_server.url, username=USERNAME, password=wrong),
            "check PROMETHEUS_USERNAME and PROMETHEUS_PASSWORD",
        ),
        (PrometheusClient(prometheus_server.url), "set PROMETHEUS_BEARER_TOKEN or PROMETHEUS_USERNAME"),
    ]
    for c, advice in cases:
        with pytest.raises(PrometheusError) as caught:
            c.label_values("Hostname", GPU_UTIL, 0, 1000)
        message = str(caught.value)
        assert caught.value.kind == "unauthorized" and "HTTP 401" in message and advice in message
        assert "\n" not in message and wrong not in message
        assert b64encode(f"{USERNAME}:{wrong}".encode()).decode() not in message


def test_a_bearer_token_reaches_the_server_and_retries_are_bounded(
    prometheus_server: PrometheusServer, fetched: pd.DataFrame
) -> None:
    with AuthGateway(prometheus_server.url, TOKEN) as gateway:
        c = PrometheusClient(gateway.url, bearer_token=TOKEN, backoff_seconds=0.01)
        gateway.script.extend([(503, 0.0), (502, 0.0)])  # the first request fails twice
        got = fetch(c, mapping(), at(9, 0), at(9, 6))
        assert gateway.received and all(r.authorization == f"Bearer {TOKEN}" for r in gateway.received)
        assert len({r.path for r in gateway.received[:3]}) == 1  # the same request, retried
        assert sum(r.path == "/api/v1/query_range" for r in gateway.received) == 4  # 4 batches, 1 chunk
        window = fetched[(fetched["usage_hour"] >= at(9, 0)) & (fetched["usage_hour"] < at(9, 6))]
        key = ["resource_id", "usage_hour"]
        pd.testing.assert_frame_equal(
            got.sort_values(key).reset_index(drop=True), window.sort_values(key).reset_index(drop=True)
        )

        gateway.script.extend([(503, 0.0)] * 3)
        with pytest.raises(PrometheusError) as caught:
            c.label_values("Hostname", GPU_UTIL, 0, 1000)
        assert caught.value.kind == "server_error" and "(3 attempts)" in str(caught.value)

        bad = PrometheusClient(gateway.url, bearer_token="wrong-" + TOKEN)
        with pytest.raises(PrometheusError) as caught:
            bad.label_values("Hostname", GPU_UTIL, 0, 1000)
        assert caught.value.kind == "unauthorized" and TOKEN not in str(caught.value)

        gateway.script.append((0, 1.5))  # hang past the read timeout
        slow = PrometheusClient(gateway.url, bearer_token=TOKEN, read_timeout=0.3, attempts=1)
        with pytest.raises(PrometheusError) as caught:
            slow.label_values("Hostname", GPU_UTIL, 0, 1000)
        assert caught.value.kind == "timeout" and "within 0.3 s" in str(caught.value)
        assert TOKEN not in str(caught.value)


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_prometheus_errors_are_one_line_each(client: PrometheusClient, unused_port: int) -> None:
    t = int(at(14, 0).timestamp() * 1000)
    cases = [
        ("sum_over_time(", t, t, 3600, "bad_query", "rejected the query (bad_data)"),
        (GPU_UTIL, t, t + 12_000_000, 1, "too_much_data", "exceeded maximum resolution"),  # 12,001 points
        # The fixture's server allows 1,000,000 samples per query (--query.max-samples).
        (f"sum_over_time({GPU_UTIL}[1d:1s])", t, t, 3600, "too_much_data", "too many samples"),
    ]
    for query, start, end, step, kind, text in cases:
        with pytest.raises(PrometheusError) as caught:
            client.query_range(query, start, end, step)
        message = str(caught.value)
        assert caught.value.kind == kind, message
        assert text in message and "\n" not in message and PASSWORD not in message
        if kind == "too_much_data":
            assert "lower hours_per_query or resources_per_query in HELIOX_DCGM_MAPPING" in message
    down = PrometheusClient(f"http://127.0.0.1:{unused_port}", attempts=2, backoff_seconds=0.01)
    with pytest.raises(PrometheusError) as caught:
        down.query_range("up", t, t, 3600)
    assert caught.value.kind == "unreachable" and str(caught.value).endswith("): Connection refused")
    assert str(caught.value).startswith(
        f"Prometheus at http://127.0.0.1:{unused_port} is unreachable (2 attempts)"
    )
