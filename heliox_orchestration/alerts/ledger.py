"""The alert ledger: every alert has a deterministic key, and the database decides who sends it.

* A send starts by *claiming* its key: an INSERT that the table's primary key lets exactly one
  run win, even when two runs race (no Python check-then-act).
* A key whose delivery failed stays ``failed``; a later run may take it over while it is still
  relevant (``relevant_until``) with a conditional UPDATE that, again, only one run wins.
* A ``sending`` row older than ``STALE_SENDING`` belongs to a run that died mid-send; it may be
  taken over too (alert runs are stopped after 5 minutes, so this cannot race a live send).
* ``previewed`` rows (no webhook configured) never block a real send later.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from heliox_orchestration.db.schema import alert_ledger

STALE_SENDING = dt.timedelta(minutes=10)
MAX_ERROR_CHARS = 1000

SENDING, SENT, FAILED, PREVIEWED = "sending", "sent", "failed", "previewed"


@dataclass(frozen=True)
class Claim:
    """The right to send one alert key, won by this run."""

    key: str
    first_claimed_at: dt.datetime  # when the key was first claimed (earlier on a redelivery)
    previous_status: str | None  # None: a new key; "failed"/"sending"/"previewed": a takeover
    previous_attempts: int

    @property
    def is_redelivery(self) -> bool:
        return self.previous_status in (FAILED, SENDING)


def claim(
    engine: Engine,
    key: str,
    *,
    alert_type: str,
    relevant_until: dt.datetime,
    now: dt.datetime,
    run_id: str | None = None,
    live: bool = True,
) -> Claim | None:
    """Claim ``key`` for sending; None when another run has it, it was already delivered, or
    a failed delivery is no longer relevant."""
    if now >= relevant_until:
        return None
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(alert_ledger).values(
                    alert_key=key,
                    alert_type=alert_type,
                    status=SENDING,
                    attempts=0,
                    run_id=run_id,
                    relevant_until=relevant_until,
                    created_at=now,
                    updated_at=now,
                )
            )
        return Claim(key=key, first_claimed_at=now, previous_status=None, previous_attempts=0)
    except IntegrityError:
        pass

    c = alert_ledger.c
    takeover = or_(
        and_(c.status == FAILED, c.relevant_until > now),
        and_(c.status == SENDING, c.updated_at < now - STALE_SENDING),
    )
    if live:
        takeover = or_(takeover, c.status == PREVIEWED)
    with engine.begin() as conn:
        row = conn.execute(select(c.status, c.attempts, c.created_at).where(c.alert_key == key)).one_or_none()
        if row is None:
            return None
        won = conn.execute(
            update(alert_ledger)
            .where(c.alert_key == key, c.status == row.status, takeover)
            .values(status=SENDING, run_id=run_id, updated_at=now, relevant_until=relevant_until)
        ).rowcount
    if won != 1:
        return None
    return Claim(
        key=key,
        first_claimed_at=row.created_at,
        previous_status=row.status,
        previous_attempts=row.attempts,
    )


def record(
    engine: Engine,
    keys: Iterable[str],
    *,
    status: str,
    now: dt.datetime,
    attempts: int,
    http_status: int | None = None,
    error: str | None = None,
    payload_sha256: str | None = None,
) -> None:
    """Record the outcome of a send for every key it covered. ``error`` must already be masked."""
    if status not in (SENT, FAILED, PREVIEWED):
        raise ValueError(f"unknown ledger status {status!r}")
    c = alert_ledger.c
    with engine.begin() as conn:
        conn.execute(
            update(alert_ledger)
            .where(c.alert_key.in_(list(keys)))
            .values(
                status=status,
                attempts=c.attempts + attempts,
                http_status=http_status,
                last_error=error[:MAX_ERROR_CHARS] if error else None,
                payload_sha256=payload_sha256,
                updated_at=now,
                sent_at=now if status == SENT else None,
            )
        )


def recently_sent(engine: Engine, key_prefixes: Iterable[str], since: dt.datetime) -> set[str]:
    """Which of ``key_prefixes`` have a key sent at or after ``since``."""
    prefixes = list(key_prefixes)
    if not prefixes:
        return set()
    c = alert_ledger.c
    with engine.connect() as conn:
        keys = conn.execute(
            select(c.alert_key).where(
                c.status == SENT,
                c.sent_at >= since,
                or_(*(c.alert_key.startswith(p, autoescape=True) for p in prefixes)),
            )
        ).scalars()
        return {p for key in keys for p in prefixes if key.startswith(p)}


def redeliverable(engine: Engine, now: dt.datetime, wait: dt.timedelta) -> list[Any]:
    """Failed (or abandoned ``sending``) keys still relevant and quiet for at least ``wait``."""
    c = alert_ledger.c
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(c.alert_key, c.alert_type, c.attempts, c.updated_at)
                .where(
                    c.relevant_until > now,
                    or_(
                        and_(c.status == FAILED, c.updated_at <= now - wait),
                        and_(c.status == SENDING, c.updated_at < now - STALE_SENDING),
                    ),
                )
                .order_by(c.updated_at)
            )
        )


def expire(engine: Engine, keys: Iterable[str], now: dt.datetime) -> int:
    """End the relevance of failed keys whose alert no longer applies (the finding went away,
    the day is back under the threshold), so nothing tries to redeliver them."""
    keys = list(keys)
    if not keys:
        return 0
    c = alert_ledger.c
    with engine.begin() as conn:
        return (
            conn.execute(
                update(alert_ledger)
                .where(c.alert_key.in_(keys), c.status == FAILED)
                .values(relevant_until=now, updated_at=now)
            ).rowcount
            or 0
        )


def failed_keys(engine: Engine, prefix: str, now: dt.datetime) -> list[str]:
    """Keys under ``prefix`` whose delivery failed and that are still relevant."""
    c = alert_ledger.c
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(c.alert_key).where(
                    c.alert_key.startswith(prefix, autoescape=True),
                    c.status == FAILED,
                    c.relevant_until > now,
                )
            ).scalars()
        )


def list_entries(engine: Engine, since: dt.datetime | None = None, limit: int = 200) -> list[dict]:
    """Newest first, for ``heliox alerts``."""
    query = select(alert_ledger).order_by(alert_ledger.c.created_at.desc()).limit(limit)
    if since is not None:
        query = query.where(alert_ledger.c.created_at >= since)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
