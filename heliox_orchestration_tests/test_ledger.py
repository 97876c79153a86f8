"""The alert ledger on real databases: one winner per key, redelivery of failures only."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import Engine

from heliox_orchestration.alerts import ledger

NOW = dt.datetime(2026, 1, 9, 17, 0, tzinfo=dt.UTC)
UNTIL = NOW + dt.timedelta(hours=6)


def _claim(engine: Engine, key: str = "burn-rate:2026-01-09:100", **kw: object) -> ledger.Claim | None:
    args: dict = {"alert_type": "burn-rate", "relevant_until": UNTIL, "now": NOW, **kw}
    return ledger.claim(engine, key, **args)


def test_first_claim_wins_second_gets_nothing(any_engine: Engine) -> None:
    first = _claim(any_engine)
    assert first is not None and first.previous_status is None and not first.is_redelivery
    assert _claim(any_engine) is None


def test_sent_key_is_never_sent_again(any_engine: Engine) -> None:
    assert _claim(any_engine) is not None
    ledger.record(any_engine, ["burn-rate:2026-01-09:100"], status=ledger.SENT, now=NOW, attempts=1)
    assert _claim(any_engine, now=NOW + dt.timedelta(hours=1)) is None
    (entry,) = ledger.list_entries(any_engine)
    assert entry["status"] == "sent" and entry["attempts"] == 1 and entry["sent_at"] == NOW


def test_failed_key_is_redelivered_while_relevant_then_dropped(any_engine: Engine) -> None:
    assert _claim(any_engine) is not None
    ledger.record(
        any_engine,
        ["burn-rate:2026-01-09:100"],
        status=ledger.FAILED,
        now=NOW,
        attempts=4,
        http_status=500,
        error="Slack answered 500",
    )
    later = NOW + dt.timedelta(hours=1)
    retry = _claim(any_engine, now=later)
    assert retry is not None and retry.is_redelivery and retry.previous_attempts == 4
    assert retry.first_claimed_at == NOW
    ledger.record(any_engine, [retry.key], status=ledger.FAILED, now=later, attempts=4)
    assert _claim(any_engine, now=UNTIL + dt.timedelta(minutes=1)) is None
    (entry,) = ledger.list_entries(any_engine)
    assert entry["attempts"] == 8 and entry["status"] == "failed"


def test_stale_sending_row_of_a_dead_run_is_taken_over(any_engine: Engine) -> None:
    assert _claim(any_engine) is not None
    assert _claim(any_engine, now=NOW + dt.timedelta(minutes=5)) is None
    taken = _claim(any_engine, now=NOW + ledger.STALE_SENDING + dt.timedelta(minutes=1))
    assert taken is not None and taken.previous_status == "sending"


def test_preview_does_not_block_a_real_send(any_engine: Engine) -> None:
    assert _claim(any_engine, live=False) is not None
    ledger.record(any_engine, ["burn-rate:2026-01-09:100"], status=ledger.PREVIEWED, now=NOW, attempts=0)
    assert _claim(any_engine, live=False) is None
    assert _claim(any_engine, live=True) is not None


def test_recently_sent_prefixes(any_engine: Engine) -> None:
    for key in ("idle-spend:gpu-a:2026-W02", "idle-spend:gpu-b:2026-W02"):
        assert _claim(any_engine, key) is not None
    ledger.record(any_engine, ["idle-spend:gpu-a:2026-W02"], status=ledger.SENT, now=NOW, attempts=1)
    found = ledger.recently_sent(
        any_engine,
        ["idle-spend:gpu-a:", "idle-spend:gpu-b:", "idle-spend:gpu_c:"],
        since=NOW - dt.timedelta(days=7),
    )
    assert found == {"idle-spend:gpu-a:"}


@pytest.mark.postgres
def test_racing_claims_on_postgres_have_exactly_one_winner(postgres_engine: Engine) -> None:
    winners: list[ledger.Claim] = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        result = _claim(postgres_engine, "daily-summary:2026-01-08")
        if result is not None:
            winners.append(result)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
