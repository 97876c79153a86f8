"""The one clock the alert ops and sensors read, so tests can stand at any instant."""

from __future__ import annotations

import datetime as dt


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
