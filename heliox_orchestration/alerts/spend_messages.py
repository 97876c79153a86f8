"""The 📈 GPU Spend Anomaly and 💰 GPU Budget messages (``alerts/spend_anomaly.py``,
``alerts/budget.py``), Block Kit within Slack's limits (``alerts/messages.py`` enforces them)."""

from __future__ import annotations

from collections.abc import Sequence
from zoneinfo import ZoneInfo

from slack_sdk.models.blocks import Block

from heliox_orchestration.alerts.formatting import label, link, percent, plural
from heliox_orchestration.alerts.messages import SlackMessage, context, header, section
from heliox_orchestration.detections.anomaly import BASELINE_TEXT, MODEL, TEAM, Anomaly
from heliox_orchestration.detections.budget import BudgetStatus
from heliox_orchestration.money import format_usd

SHOWN = 5
ANOMALY_TITLE = "📈 GPU Spend Anomaly"


def what_spiked(anomaly: Anomaly) -> str:
    if anomaly.dimension == TEAM:
        return f"Team {label(anomaly.value)}"
    if anomaly.dimension == MODEL:
        return f"Model {label(anomaly.value)}"
    return "Total fleet spend"


def _excess(anomaly: Anomaly) -> str:
    pct = anomaly.excess_pct
    share = "new spend: the baseline is $0.00" if pct is None else f"+{percent(pct)}"
    return f"{format_usd(anomaly.excess_usd)} ({share})"


def _hours(anomaly: Anomaly, timezone: str) -> str:
    if anomaly.partial_until is None:
        return "the whole day"
    until = anomaly.partial_until.astimezone(ZoneInfo(timezone))
    return f"00:00-{until:%H:%M} ({timezone}) so far, against the same hours of the baseline days"


def _anomaly_section(anomaly: Anomaly, timezone: str) -> str:
    days = ", ".join(f"{d:%b %d}" for d in anomaly.baseline_days)
    spend = "Spend so far" if anomaly.partial_until is not None else "Spend"
    lines = [
        f"{spend}: {format_usd(anomaly.current_usd)} vs baseline {format_usd(anomaly.baseline_usd)}",
        f"Above baseline by: {_excess(anomaly)}",
        f"Hours compared: {_hours(anomaly, timezone)}",
        f"Baseline: {BASELINE_TEXT[anomaly.baseline_kind]} ({days})",
    ]
    text = f"*{what_spiked(anomaly)}* on {anomaly.day.isoformat()}\n" + "\n".join(f"• {x}" for x in lines)
    if anomaly.drivers:
        drivers = [
            f"{i}. {label(d.resource_id)}: {format_usd(d.current_usd)} vs {format_usd(d.baseline_usd)} "
            f"(+{format_usd(d.difference_usd)})"
            for i, d in enumerate(anomaly.drivers, start=1)
        ]
        text += "\n*Top resources driving the difference:*\n" + "\n".join(drivers)
    return text


def spend_anomaly_message(
    anomalies: Sequence[Anomaly],
    timezone: str,
    *,
    team: str | None = None,
    dashboard_url: str | None = None,
) -> SlackMessage:
    """The anomalies of one destination, largest first within each dimension."""
    if not anomalies:
        blocks: list[Block] = [header("✅ No GPU Spend Anomaly"), section("No spend above its baseline.")]
        return SlackMessage.build("✅ No GPU spend anomaly", blocks)
    first = anomalies[0]
    whose = f" for team {label(team)}" if team else ""
    blocks = [
        header(ANOMALY_TITLE),
        section(f"GPU spend{whose} is well above its usual level: {plural(len(anomalies), 'spike')}."),
    ]
    blocks += [section(_anomaly_section(a, timezone)) for a in anomalies[:SHOWN]]
    if len(anomalies) > SHOWN:
        blocks.append(section(f"...and {len(anomalies) - SHOWN:,} more"))
    tip = "💡 A spike is at least the configured % and $ above the baseline (ANOMALY_PCT, ANOMALY_MIN_USD)"
    if dashboard_url:
        tip += f"; {link(dashboard_url, 'review it in your Heliox dashboard')}"
    blocks.append(context(tip))
    so_far = " so far" if first.partial_until is not None else ""
    fallback = (
        f"{ANOMALY_TITLE}: {what_spiked(first)} on {first.day.isoformat()} is "
        f"{format_usd(first.current_usd)}{so_far} vs {format_usd(first.baseline_usd)} baseline, "
        f"{_excess(first)}"
    )
    if len(anomalies) > 1:
        fallback += f"; and {plural(len(anomalies) - 1, 'more spike')}"
    return SlackMessage.build(fallback, blocks)


BUDGET_TITLE = {"actual": "💰 GPU Budget Alert", "forecast": "🔮 GPU Budget Forecast Alert"}


def budget_message(status: BudgetStatus, level: int | None, *, team: str | None = None) -> SlackMessage:
    """One budget's month: ACTUAL spend past ``level`` % of the budget, or (``level`` None) the
    FORECASTED month-end spend over it."""
    whose = f"Team {label(team)}'s" if team else "The fleet's"
    month = f"{status.month_start:%B %Y}"
    budget, mtd = format_usd(status.budget_usd), format_usd(status.month_to_date_usd)
    forecast = format_usd(status.forecast_usd)
    if level is None:
        title = BUDGET_TITLE["forecast"]
        intro = f"{whose} GPU spend is forecast to exceed its {month} budget of {budget}."
        fallback = f"{title}: {whose.lower()} {month} forecast {forecast} exceeds the {budget} budget"
    else:
        title = BUDGET_TITLE["actual"]
        intro = f"{whose} GPU spend has passed {level}% of its {month} budget of {budget}."
        fallback = f"{title}: {whose.lower()} {month} spend {mtd} passed {level}% of the {budget} budget"
    lines = [
        f"Month to date ({status.month_start:%b %d} – {status.through:%b %d}): {mtd} "
        f"({percent(status.used_pct)} of {budget})",
        f"Forecast for {month}: {forecast}",
        f"Forecast = month to date + trailing 7-day daily mean {format_usd(status.daily_mean_usd)} "
        f"× {plural(status.days_left, 'day')} left",
    ]
    blocks: list[Block] = [header(title), section(intro), section("\n".join(f"• {x}" for x in lines))]
    blocks.append(context(f"Local month in {status.timezone}; each level alerts once per month."))
    return SlackMessage.build(fallback, blocks)


def month_line(status: BudgetStatus) -> str:
    """The daily summary's line: "Month to date: $X of $Y budget, forecast $Z"."""
    return (
        f"Month to date: {format_usd(status.month_to_date_usd)} of {format_usd(status.budget_usd)} "
        f"budget, forecast {format_usd(status.forecast_usd)}"
    )
