"""The alert ledger on real databases: one winner per key, redelivery of failures only."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import Engine, inspect, text

from heliox_orchestration.alerts import ledger
from heliox_orchestration.alerts.idle_spend import idle_key, idle_key_prefix
from heliox_orchestration.alerts.kinds import AlertKeyError
from heliox_orchestration.db.engine import DatabaseConfigError, ensure_schema
from heliox_orchestration.db.migrate import add_missing_nullable_columns, migrate

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


def test_a_key_that_does_not_fit_is_refused_before_any_write(any_engine: Engine) -> None:
    for bad in ("idle-spend:" + "x" * 250 + ":2026-W02", "no-such-kind:1", "burn-rate:2026-01-09"):
        with pytest.raises(AlertKeyError):
            _claim(any_engine, bad)
    assert ledger.list_entries(any_engine) == []


def test_a_255_character_resource_id_gets_a_key_that_fits(any_engine: Engine) -> None:
    resource = "r" * 255
    key = idle_key(resource, NOW.date())
    assert _claim(any_engine, key) is not None
    ledger.record(any_engine, [key], status=ledger.SENT, now=NOW, attempts=1)
    found = ledger.recently_sent(any_engine, [idle_key_prefix(resource)], since=NOW - dt.timedelta(days=1))
    assert found == {idle_key_prefix(resource)}


def test_recently_sent_matches_a_resource_not_its_namesakes(any_engine: Engine) -> None:
    # A resource id may contain ':'; "gpu" must not match the keys of "gpu:2026-W02".
    key = idle_key("gpu:2026-W02", NOW.date())
    assert _claim(any_engine, key) is not None
    ledger.record(any_engine, [key], status=ledger.SENT, now=NOW, attempts=1)
    prefixes = [idle_key_prefix("gpu"), idle_key_prefix("gpu:2026-W02")]
    assert ledger.recently_sent(any_engine, prefixes, NOW - dt.timedelta(days=1)) == {prefixes[1]}


def test_attempts_are_counted_before_they_are_made(any_engine: Engine) -> None:
    key = "burn-rate:2026-01-09:100"
    assert _claim(any_engine, key) is not None
    ledger.count_attempt(any_engine, [key], NOW)  # the run dies here, mid-send
    (entry,) = ledger.list_entries(any_engine)
    assert entry["status"] == "sending" and entry["attempts"] == 1
    later = NOW + ledger.STALE_SENDING + dt.timedelta(seconds=1)
    taken = _claim(any_engine, key, now=later)
    assert taken is not None and taken.is_possible_repeat and taken.previous_updated_at == NOW
    assert taken.previous_attempts == 1


def test_a_refused_key_waits_for_another_webhook(any_engine: Engine) -> None:
    key = "daily-summary:2026-01-08"
    assert _claim(any_engine, key, webhook="aaaa") is not None
    ledger.record(any_engine, [key], status=ledger.FAILED, now=NOW, attempts=1, refused_webhook="aaaa")
    (entry,) = ledger.list_entries(any_engine)
    assert ledger.shown_status(entry) == "refused" and entry["refused_webhook"] == "aaaa"
    later = NOW + dt.timedelta(hours=1)
    assert _claim(any_engine, key, now=later, webhook="aaaa") is None
    taken = _claim(any_engine, key, now=later, webhook="bbbb")
    assert taken is not None and taken.previously_refused
    ledger.record(any_engine, [key], status=ledger.SENT, now=later, attempts=1)
    (entry,) = ledger.list_entries(any_engine)
    assert ledger.shown_status(entry) == "sent" and entry["refused_webhook"] is None


def test_migrate_adds_the_nullable_columns_an_older_ledger_lacks(any_engine: Engine) -> None:
    with any_engine.begin() as conn:
        conn.execute(text("ALTER TABLE alert_ledger DROP COLUMN refused_webhook"))
    assert "refused_webhook" not in {c["name"] for c in inspect(any_engine).get_columns("alert_ledger")}
    with pytest.raises(DatabaseConfigError, match=r"alert_ledger.refused_webhook.*heliox migrate"):
        ensure_schema(any_engine)  # writers refuse it
    assert migrate(any_engine).added_columns == ["alert_ledger.refused_webhook"]
    ensure_schema(any_engine)
    assert "refused_webhook" in {c["name"] for c in inspect(any_engine).get_columns("alert_ledger")}
    with any_engine.begin() as conn:
        assert add_missing_nullable_columns(conn) == []  # nothing left to add
    assert _claim(any_engine, "daily-summary:2026-01-08") is not None
