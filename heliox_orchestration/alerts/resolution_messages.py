"""The ✅ Idle GPU Resolved message: alerted idle GPUs that stopped costing money idle, what
changed, and the monthly spend that stopped (``detections/resolution.py``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from zoneinfo import ZoneInfo

from slack_sdk.models.blocks import Block

from heliox_orchestration.alerts.formatting import label, plural
from heliox_orchestration.alerts.messages import MAX_HEADER_CHARS, SlackMessage, context, header, section
from heliox_orchestration.detections.resolution import BUSY, Episode
from heliox_orchestration.money import format_usd

SHOWN = 5


def _since(instant: dt.datetime, timezone: str) -> str:
    return f"{instant.astimezone(ZoneInfo(timezone)):%Y-%m-%d %H:%M} ({timezone})"


def _resolved(rank: int, episode: Episode, timezone: str) -> str:
    assert episode.resolved_at is not None
    what = "Busy again" if episode.resolution == BUSY else "Gone from the usage data"
    details = [f"Resource: {label(episode.resource_id)}"]
    if episode.team:
        details.append(f"Team: {label(episode.team)}")
    if episode.model_name:
        details.append(f"Model: {label(episode.model_name)}")
    return (
        f"*{rank}. {label(episode.title, MAX_HEADER_CHARS)}*\n"
        f"{what}: {label(episode.resolution_detail, 200)} (since {_since(episode.resolved_at, timezone)})\n"
        f"💰 {format_usd(episode.monthly_savings_usd)}/month no longer spent\n"
        f"{' · '.join(details)}"
    )


def idle_resolved_message(
    episodes: Sequence[Episode], timezone: str, *, team: str | None = None
) -> SlackMessage:
    """The GPUs this alert resolves, highest monthly spend first."""
    ranked = sorted(episodes, key=lambda e: (-e.monthly_savings_usd, e.resource_id))
    total = sum((e.monthly_savings_usd for e in ranked), Decimal(0))
    title = "✅ Idle GPU Resolved" if len(ranked) == 1 else "✅ Idle GPUs Resolved"
    whose = f" of team {label(team)}" if team else ""
    gpus = plural(len(ranked), "idle GPU")
    blocks: list[Block] = [
        header(title),
        section(
            f"{gpus}{whose} alerted on stopped costing money idle: "
            f"*{format_usd(total)}/month no longer spent*."
        ),
    ]
    blocks += [section(_resolved(rank, e, timezone)) for rank, e in enumerate(ranked[:SHOWN], start=1)]
    if len(ranked) > SHOWN:
        blocks.append(section(f"...and {len(ranked) - SHOWN:,} more"))
    blocks.append(context("The daily summary counts the savings realized this month."))
    first = ranked[0]
    subject = label(first.resource_id) if len(ranked) == 1 else gpus
    fallback = f"{title}: {subject}, {format_usd(total)}/month no longer spent"
    return SlackMessage.build(fallback, blocks)
