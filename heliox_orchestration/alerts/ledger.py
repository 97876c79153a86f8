"""The alert ledger: every alert has a deterministic key, and the database decides who sends it.

* A send starts by *claiming* its key: an INSERT that the table's primary key lets exactly one
  run win, even when two runs race (no Python check-then-act). Keys are checked against the
  alert-kind registry (``kinds.check_key``: registered kind, fits the column) before any write.
* Each HTTP attempt is counted (``count_attempt``) before it is made, so a run that dies
  mid-send leaves its attempt counted.
* A key whose delivery failed stays ``failed``; a later run may take it over while it is still
  relevant (``relevant_until``) with a conditional UPDATE that, again, only one run wins.
* A permanent refusal is ``failed`` with ``refused_webhook``, the fingerprint of the webhook that
  refused it: it is not taken over with that webhook again, only with another one.
* A ``sending`` row not updated for ``STALE_SENDING`` belongs to a run that died mid-send; it may
  be taken over too (alert runs are stopped after 5 minutes, so this cannot race a live send).
  That is the one case where Slack may get an alert twice; its message says so.
* ``previewed`` rows (no webhook configured) never block a real send later.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, insert, or_, select, true, update
from sqlalchemy.exc import IntegrityError

from heliox_orchestration.alerts.kinds import SEP, check_key
from heliox_orchestration.db.alert_schema import alert_ledger

STALE_SENDING = dt.timedelta(minutes=10)
MAX_ERROR_CHARS = 1000

SENDING, SENT, FAILED, PREVIEWED = "sending", "sent", "failed", "previewed"
REFUSED = "refused"  # shown for a failed row with refused_webhook; not a stored status


@dataclass(frozen=True)
class Claim:
    """The right to send one alert key, won by this run."""

    key: str
    first_claimed_at: dt.datetime  # when the key was first claimed (earlier on a redelivery)
    previous_status: str | None  # None: a new key; "failed"/"sending"/"previewed": a takeover
    previous_attempts: int
    previous_updated_at: dt.datetime | None = None  # a takeover: when the row last changed
    previously_refused: bool = False  # a takeover of a key a previous webhook refused

    @property
    def is_redelivery(self) -> bool:
        return self.previous_status in (FAILED, SENDING)

    @property
    def is_possible_repeat(self) -> bool:
        """Taken over from a run that stopped mid-send: Slack may already have the message."""
        return self.previous_status == SENDING


def claim(
    engine: Engine,
    key: str,
    *,
    alert_type: str,
    relevant_until: dt.datetime,
    now: dt.datetime,
    run_id: str | None = None,
    live: bool = True,
    webhook: str | None = None,
) -> Claim | None:
    """Claim ``key`` for sending; None when another run has it, it was already delivered, a
    failed delivery is no longer relevant, or ``webhook`` (a fingerprint) already refused it.
    Raises ``AlertKeyError`` before writing anything when the key does not fit the ledger."""
    check_key(key)
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
    except IntegrityError as exc:
        refused = exc  # the key exists already, unless the database refused the row itself

    c = alert_ledger.c
    not_refused = (
        or_(c.refused_webhook.is_(None), c.refused_webhook != webhook) if webhook is not None else true()
    )
    takeover = or_(
        and_(c.status == FAILED, c.relevant_until > now, not_refused),
        and_(c.status == SENDING, c.updated_at < now - STALE_SENDING),
    )
    if live:
        takeover = or_(takeover, c.status == PREVIEWED)
    with engine.begin() as conn:
        row = conn.execute(
            select(c.status, c.attempts, c.created_at, c.updated_at, c.refused_webhook).where(
                c.alert_key == key
            )
        ).one_or_none()
        if row is None:
            raise refused
        won = conn.execute(
            update(alert_ledger)
            .where(c.alert_key == key, c.status == row.status, c.updated_at == row.updated_at, takeover)
            .values(status=SENDING, run_id=run_id, updated_at=now, relevant_until=relevant_until)
        ).rowcount
    if won != 1:
        return None
    return Claim(
        key=key,
        first_claimed_at=row.created_at,
        previous_status=row.status,
        previous_attempts=row.attempts,
        previous_updated_at=row.updated_at,
        previously_refused=row.status == FAILED and row.refused_webhook is not None,
    )


def count_attempt(engine: Engine, keys: Iterable[str], now: dt.datetime) -> None:
    """Count one HTTP attempt on keys this run is sending, before it is made."""
    c = alert_ledger.c
    with engine.begin() as conn:
        conn.execute(
            update(alert_ledger)
            .where(c.alert_key.in_(list(keys)), c.status == SENDING)
            .values(attempts=c.attempts + 1, updated_at=now)
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
    refused_webhook: str | None = None,
) -> None:
    """Record the outcome of a send for every key it covered: ``attempts`` HTTP attempts not
    counted yet, and for a permanent refusal the fingerprint of the webhook that refused it.
    ``error`` must already be masked."""
    if status not in (SENT, FAILED, PREVIEWED):
        raise ValueError(f"unknown ledger status {status!r}")
    if refused_webhook is not None and status != FAILED:
        raise ValueError("only a failed delivery can be refused")
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
                refused_webhook=refused_webhook,
            )
        )


def recently_sent(
    engine: Engine, key_prefixes: Iterable[str], since: dt.datetime, *, previewed: bool = False
) -> set[str]:
    """Which of ``key_prefixes`` have a key sent (or, with ``previewed``, previewed) at or after
    ``since``: the prefix plus one last field (so ``idle-spend:gpu:`` does not match the keys
    of a resource named ``gpu:2026-W02``)."""
    prefixes = list(key_prefixes)
    if not prefixes:
        return set()
    c = alert_ledger.c
    delivered = and_(c.status == SENT, c.sent_at >= since)
    if previewed:
        delivered = or_(delivered, and_(c.status == PREVIEWED, c.updated_at >= since))
    with engine.connect() as conn:
        keys = conn.execute(
            select(c.alert_key).where(
                delivered,
                or_(*(c.alert_key.startswith(p, autoescape=True) for p in prefixes)),
            )
        ).scalars()
        return {p for key in keys for p in prefixes if key.startswith(p) and SEP not in key[len(p) :]}


def redeliverable(engine: Engine, now: dt.datetime, wait: dt.timedelta) -> list[Any]:
    """Failed (or abandoned ``sending``) keys still relevant and quiet for at least ``wait``."""
    c = alert_ledger.c
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(c.alert_key, c.alert_type, c.attempts, c.updated_at, c.status, c.refused_webhook)
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


def statuses(engine: Engine, keys: Iterable[str]) -> dict[str, str]:
    """The status of each of ``keys`` that is in the ledger."""
    keys = list(keys)
    if not keys:
        return {}
    c = alert_ledger.c
    with engine.connect() as conn:
        return {
            key: status
            for key, status in conn.execute(select(c.alert_key, c.status).where(c.alert_key.in_(keys)))
        }


def keys_of_run(engine: Engine, run_id: str) -> dict[str, str]:
    """The keys a run holds (claimed last) and their status."""
    c = alert_ledger.c
    with engine.connect() as conn:
        return {
            key: status
            for key, status in conn.execute(select(c.alert_key, c.status).where(c.run_id == run_id))
        }


def shown_status(entry: dict) -> str:
    """The status ``heliox alerts`` shows: ``refused`` for a failure a webhook refused."""
    return REFUSED if entry["status"] == FAILED and entry.get("refused_webhook") else entry["status"]


def list_entries(engine: Engine, since: dt.datetime | None = None, limit: int = 200) -> list[dict]:
    """Newest first, for ``heliox alerts``."""
    query = select(alert_ledger).order_by(alert_ledger.c.created_at.desc()).limit(limit)
    if since is not None:
        query = query.where(alert_ledger.c.created_at >= since)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
