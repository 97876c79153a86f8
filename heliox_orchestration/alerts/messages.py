"""The Slack messages of Heliox, as Block Kit built with ``slack_sdk.models.blocks``.

Each renderer takes a report from ``heliox_orchestration.reports`` and returns a ``SlackMessage``:
Block Kit blocks plus the top-level ``text`` fallback that notifications show. Block Kit limits
are enforced here, by truncating with an ellipsis, so Slack never rejects a message for its size.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import zip_longest
from typing import Any
from zoneinfo import ZoneInfo

from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from heliox_orchestration.alerts.formatting import (
    ELLIPSIS,
    label,
    link,
    percent,
    plural,
    sparkline,
    truncate,
    truncate_mrkdwn,
    unescape,
)
from heliox_orchestration.costs.common import HOURS_PER_MONTH
from heliox_orchestration.money import format_usd
from heliox_orchestration.reports import (
    BurnRateStatus,
    CostDriver,
    CostSummary,
    IdleFinding,
    IdleSpendReport,
    RightsizingFinding,
    WithheldResource,
)

# Slack's documented Block Kit limits.
MAX_BLOCKS = 50
MAX_HEADER_CHARS = 150
MAX_SECTION_CHARS = 3000
MAX_FIELDS = 10
MAX_FIELD_CHARS = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_CONTEXT_CHARS = 2000
# Notifications show only the start of the fallback; Slack itself truncates beyond 40,000.
MAX_FALLBACK_CHARS = 1000

TOP_N = 3
MAX_GAP_DAYS_SHOWN = 5
DIVIDER_TEXT = "━" * 31
REVIEW_DASHBOARD = "Review them in your Heliox dashboard"


def header(text: str) -> HeaderBlock:
    return HeaderBlock(text=PlainTextObject(text=truncate(text, MAX_HEADER_CHARS), emoji=True))


def section(mrkdwn: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=truncate_mrkdwn(mrkdwn, MAX_SECTION_CHARS)))


def fields(*mrkdwn: str) -> SectionBlock:
    return SectionBlock(
        fields=[
            MarkdownTextObject(text=truncate_mrkdwn(text, MAX_FIELD_CHARS)) for text in mrkdwn[:MAX_FIELDS]
        ]
    )


def context(*mrkdwn: str) -> ContextBlock:
    return ContextBlock(
        elements=[
            MarkdownTextObject(text=truncate_mrkdwn(text, MAX_CONTEXT_CHARS))
            for text in mrkdwn[:MAX_CONTEXT_ELEMENTS]
        ]
    )


def divider() -> DividerBlock:
    return DividerBlock()


@dataclass(frozen=True)
class SlackMessage:
    """A message ready to post: ``text`` (mrkdwn fallback) and Block Kit ``blocks``."""

    text: str
    blocks: tuple[Block, ...]

    @classmethod
    def build(cls, text: str, blocks: Iterable[Block]) -> SlackMessage:
        """Apply the message-level limits: block count and fallback length."""
        all_blocks = list(blocks)
        if len(all_blocks) > MAX_BLOCKS:
            hidden = len(all_blocks) - (MAX_BLOCKS - 1)
            all_blocks = [*all_blocks[: MAX_BLOCKS - 1], context(f"{ELLIPSIS} {hidden} more not shown")]
        return cls(text=truncate_mrkdwn(text, MAX_FALLBACK_CHARS), blocks=tuple(all_blocks))

    def to_payload(self) -> dict[str, Any]:
        """The JSON body posted to the webhook. ``to_dict`` re-checks slack-sdk's own limits."""
        return {
            "text": self.text,
            "blocks": [block.to_dict() for block in self.blocks],
            "unfurl_links": False,
            "unfurl_media": False,
        }

    def to_plain_text(self) -> str:
        return render_plain_text(self.to_payload())


# --- plain text ---------------------------------------------------------------------------------

_LINK = re.compile(r"<([^<>|]+)\|([^<>]*)>")
_BARE_LINK = re.compile(r"<([^<>|]+)>")
_BOLD = re.compile(r"(?<![^\s(])\*([^*\n]+)\*(?![^\s.,:;!?)])")


def mrkdwn_to_plain(text: str) -> str:
    """Readable text of mrkdwn: links as ``label (url)``, bold markers dropped, entities decoded."""
    text = _LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})", text)
    text = _BARE_LINK.sub(r"\1", text)
    return unescape(_BOLD.sub(r"\1", text))


def _text_object(obj: dict[str, Any]) -> str:
    text = str(obj.get("text", ""))
    return mrkdwn_to_plain(text) if obj.get("type") == "mrkdwn" else text


def _columns(cells: Sequence[str]) -> str:
    """Fields side by side in two columns, as Slack lays them out."""
    rows = []
    for i in range(0, len(cells), 2):
        left = cells[i].splitlines()
        right = cells[i + 1].splitlines() if i + 1 < len(cells) else []
        width = max(20, *(len(line) + 4 for line in left))
        rows.append("\n".join(f"{a:<{width}}{b}".rstrip() for a, b in zip_longest(left, right, fillvalue="")))
    return "\n\n".join(rows)


def render_plain_text(payload: dict[str, Any]) -> str:
    """A readable rendering of a webhook payload (blocks, or the text alone), for logs and the CLI."""
    blocks = payload.get("blocks") or []
    if not blocks:
        return mrkdwn_to_plain(str(payload.get("text", "")))
    parts: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            parts.append(_text_object(block["text"]))
        elif kind == "section":
            texts = [_text_object(block["text"])] if block.get("text") else []
            if block.get("fields"):
                texts.append(_columns([_text_object(f) for f in block["fields"]]))
            parts.append("\n\n".join(texts))
        elif kind == "context":
            parts.append("  ".join(_text_object(e) for e in block.get("elements", []) if "text" in e))
        elif kind == "divider":
            parts.append(DIVIDER_TEXT)
    return "\n\n".join(parts)


# --- the messages -------------------------------------------------------------------------------


def _bullets(lines: Iterable[str]) -> str:
    return "\n".join(f"• {line}" for line in lines)


def _drivers(title: str, drivers: Sequence[CostDriver]) -> str:
    lines = [f"{label(d.label)}: {format_usd(d.cost_usd)}" for d in drivers[:TOP_N]]
    return f"*{title}*\n{_bullets(lines)}"


def _dashboard(dashboard_url: str | None, text: str = REVIEW_DASHBOARD) -> str:
    return link(dashboard_url, text) if dashboard_url else text


def burn_rate_message(
    status: BurnRateStatus, *, dashboard_url: str | None = None, team: str | None = None
) -> SlackMessage:
    """The 🔥 High Burn Rate Alert (of the fleet, or of ``team``'s spend against its own
    threshold); below the threshold (e.g. in a preview) it says so instead."""
    day = status.day.isoformat()
    cost = format_usd(status.cost_usd) + (" so far" if status.is_today else "")
    if not status.has_data:
        cost += " (no usage data)"
    threshold = format_usd(status.threshold_usd)
    whose = f"Team {label(team)}'s daily GPU spending" if team else "Daily GPU spending"
    spend = f"team {label(team)}'s GPU spend" if team else "GPU spend"
    lines = [f"Date: {day}", f"Daily Cost: {cost}", f"Threshold: {threshold}"]
    if team:
        lines.insert(0, f"Team: {label(team)}")
    if status.is_over:
        title, intro = "🔥 High Burn Rate Alert", f"{whose} has exceeded the threshold!"
        lines.append(f"Over by: {format_usd(status.over_by_usd)} ({percent(status.over_pct)})")
        fallback = (
            f"{title}: {spend} on {day} is {cost}, over the {threshold} threshold by "
            f"{format_usd(status.over_by_usd)} ({percent(status.over_pct)})"
        )
    else:
        title, intro = "✅ GPU Spend Within Threshold", f"{whose} is within the threshold."
        lines.append(f"Under by: {format_usd(-status.over_by_usd)} ({percent(-status.over_pct)})")
        fallback = f"{title}: {spend} on {day} is {cost}, within the {threshold} threshold"
    if status.is_today and status.projected_cost_usd is not None:
        lines.append(f"Projected End of Day: {format_usd(status.projected_cost_usd)}{_hourly_rate(status)}")

    blocks: list[Block] = [header(title), section(intro), section(_bullets(lines))]
    if status.top_drivers:
        blocks.append(section(_drivers(f"Top Cost Drivers ({day}):", status.top_drivers)))
    tip = "💡 Review your GPU usage to identify cost drivers"
    if dashboard_url:
        tip += f" in your {link(dashboard_url, 'Heliox dashboard')}"
    blocks.append(context(tip))
    return SlackMessage.build(fallback, blocks)


def _hourly_rate(status: BurnRateStatus) -> str:
    if not status.hours_elapsed:
        return ""
    rate = status.cost_usd / status.hours_elapsed
    return f" (at the current {format_usd(rate)}/hour over {status.hours_in_day} hours)"


def _finding(rank: int, finding: IdleFinding) -> str:
    where = [label(finding.resource_id)]
    if finding.region:
        where.append(label(finding.region))
    details = [f"Resource: {' · '.join(where)}"]
    if finding.team:
        details.append(f"Team: {label(finding.team)}")
    if finding.model_name:
        details.append(f"Model: {label(finding.model_name)}")
    money = f"💰 Savings: {format_usd(finding.monthly_savings_usd)}/month"
    if finding.action == "reallocate":
        # Committed capacity is paid whether it runs or not: terminating it saves nothing.
        idle = format_usd((finding.hourly_cost_usd or Decimal(0)) * HOURS_PER_MONTH)
        money = f"🔁 Reallocate: committed capacity paid idle, {idle}/month ($0 from terminating)"
    return (
        f"*{rank}. {label(finding.title, MAX_HEADER_CHARS)}*\n"
        f"{label(finding.detail, 200)}\n"
        f"{money}\n"
        f"{' · '.join(details)}"
    )


def rightsizing_message(
    findings: Sequence[RightsizingFinding], *, dashboard_url: str | None = None
) -> SlackMessage:
    """🔧 Oversized GPU Nodes (sent only with ``RIGHTSIZE_ALERTS=true``): the top 3 by savings."""
    title = "🔧 Oversized GPU Nodes"
    total = format_usd(sum((f.monthly_savings_usd for f in findings), Decimal(0)))
    nodes = plural(len(findings), "multi-GPU node")
    blocks: list[Block] = [
        header(title),
        section(f"*{nodes}* could carry their busiest hour on fewer GPUs: {total}/month"),
        divider(),
    ]
    for rank, f in enumerate(findings[:3], start=1):
        team = f" · Team: {label(f.team)}" if f.team else ""
        blocks.append(
            section(
                f"*{rank}. {label(f.title, MAX_HEADER_CHARS)}*\n{label(f.detail, 200)}\n"
                f"💰 Savings: {format_usd(f.monthly_savings_usd)}/month\n"
                f"Resource: {label(f.resource_id)}{team}"
            )
        )
    blocks.append(
        context("Advice, not a fire: sent because RIGHTSIZE_ALERTS=true. " + _dashboard(dashboard_url))
    )
    return SlackMessage.build(f"{title}: {nodes}, {total}/month potential savings", blocks)


def idle_spend_message(
    report: IdleSpendReport, *, dashboard_url: str | None = None, team: str | None = None
) -> SlackMessage:
    """The ⚠️ Idle GPU Spend alert: totals, then the top 3 findings in the report's ranking
    (of ``team``'s GPUs only, in the team's channel)."""
    findings = report.findings
    total = f"{format_usd(report.total_monthly_savings_usd)}/month"
    not_judged: list[Block] = [context(_withheld(report.withheld))] if report.withheld else []
    if not findings:
        title = "✅ No Idle GPU Spend"
        blocks: list[Block] = [header(title), section("No idle spend recommendations to report.")]
        return SlackMessage.build(f"{title}: no idle spend recommendations", blocks + not_judged)

    title = "⚠️ Idle GPU Spend Detected"
    high_only = {f.severity for f in findings} == {"high"}
    intro = f"{'High-severity idle' if high_only else 'Idle'} spend recommendations found!"
    if team:
        intro = f"{intro[:-1]} for team {label(team)}'s GPUs!"
    blocks = [
        header(title),
        section(intro),
        section(_bullets([f"Total Potential Savings: {total}", f"Number of Issues: {len(findings):,}"])),
    ]
    blocks += [section(_finding(rank, f)) for rank, f in enumerate(findings[:TOP_N], start=1)]
    if len(findings) > TOP_N:
        blocks.append(section(f"...and {len(findings) - TOP_N:,} more"))
    blocks += not_judged
    if dashboard_url:
        review = "Review all recommendations in your Heliox dashboard"
        blocks.append(context(_dashboard(dashboard_url, review)))
    whose = f" (team {label(team)})" if team else ""
    fallback = f"{title}{whose}: {plural(len(findings), 'issue')}, {total} potential savings"
    return SlackMessage.build(fallback, blocks)


def daily_summary_message(summary: CostSummary, *, dashboard_url: str | None = None) -> SlackMessage:
    """The 📊 Heliox Daily Summary of ``summary.report_date`` (yesterday, from the reader's view)."""
    title = "📊 Heliox Daily Summary"
    day = summary.report_date
    savings = f"{format_usd(summary.potential_savings_monthly_usd)}/mo"
    blocks: list[Block] = [
        header(title),
        context(f"GPU spend of {day:%A}, {day.isoformat()}"),
        fields(
            f"*Yesterday:*\n{format_usd(summary.yesterday_cost_usd)}",
            f"*Last 7 Days:*\n{format_usd(summary.last_7_days_cost_usd)}",
            f"*Last 30 Days:*\n{format_usd(summary.last_30_days_cost_usd)}",
            f"*Potential Savings:*\n{savings}",
            *_realized(summary),
        ),
    ]
    budget = _month_budget(summary)
    if budget:
        blocks.append(section(budget))
    if summary.gap_days:
        blocks.append(context(_gap_days(summary.gap_days)))
    blocks.append(divider())
    if summary.top_models:
        blocks.append(section(_drivers("Top GPU Consumers (Yesterday):", summary.top_models)))
    else:
        blocks.append(section("*Top GPU Consumers (Yesterday):*\nNo GPU usage recorded."))
    if summary.daily_series:
        blocks.append(section(_trend(summary)))
    blocks.append(divider())
    count = summary.high_severity_count
    if count:
        recs = plural(count, "high-severity recommendation")
        blocks.append(section(f"⚠️ {recs} available\n{_dashboard(dashboard_url)}"))
    else:
        blocks.append(section("✅ No high-severity recommendations"))
    if summary.rightsizing_count:
        nodes = plural(summary.rightsizing_count, "oversized GPU node")
        saving = format_usd(summary.rightsizing_savings_monthly_usd)
        blocks.append(context(f"🔧 Rightsizing: {nodes} could run on fewer GPUs ({saving}/mo)"))
    fallback = (
        f"{title} for {day.isoformat()}: yesterday {format_usd(summary.yesterday_cost_usd)}, "
        f"last 7 days {format_usd(summary.last_7_days_cost_usd)}, "
        f"last 30 days {format_usd(summary.last_30_days_cost_usd)}, potential savings {savings}"
    )
    if budget:
        fallback += f"; {budget[0].lower()}{budget[1:]}"
    return SlackMessage.build(fallback, blocks)


def _month_budget(summary: CostSummary) -> str:
    """ "Month to date: $X of $Y budget, forecast $Z" (MONTHLY_BUDGET_USD set), else ""."""
    budget, mtd, forecast = summary.monthly_budget_usd, summary.month_to_date_usd, summary.month_forecast_usd
    if budget is None or mtd is None or forecast is None:
        return ""
    return f"Month to date: {format_usd(mtd)} of {format_usd(budget)} budget, forecast {format_usd(forecast)}"


def _realized(summary: CostSummary) -> list[str]:
    if summary.savings_realized_month_usd is None:
        return []
    return [f"*Savings Realized This Month:*\n{format_usd(summary.savings_realized_month_usd)}"]


def _withheld(withheld: Sequence[WithheldResource]) -> str:
    """Which GPUs the idle rule could not judge, and why: a silent omission would read as
    "not idle"."""
    problems = ", ".join(dict.fromkeys(p for w in withheld for p in w.problems))
    rows = "its usage rows fail" if len(withheld) == 1 else "their usage rows fail"
    gpus = plural(len(withheld), "GPU")
    return f"⚠️ {gpus} not judged: {rows} checks ({problems}); fix them in gpu_usage_hourly"


def _gap_days(days: Sequence[dt.date]) -> str:
    shown = ", ".join(f"{d:%b %d}" for d in days[:MAX_GAP_DAYS_SHOWN])
    more = f" and {len(days) - MAX_GAP_DAYS_SHOWN} more" if len(days) > MAX_GAP_DAYS_SHOWN else ""
    return f"⚠️ No usage data on {plural(len(days), 'day')} of the last 30: {shown}{more}"


def _trend(summary: CostSummary) -> str:
    points = summary.daily_series
    values: list[Decimal | None] = [p.cost_usd if p.has_data else None for p in points]
    line = f"*7-Day Trend:* {sparkline(values)}  {points[0].day:%b %d} – {points[-1].day:%b %d}"
    known = [p for p in points if p.has_data]
    if known:
        low = min(known, key=lambda p: p.cost_usd)
        high = max(known, key=lambda p: p.cost_usd)
        low_text = f"{format_usd(low.cost_usd)} ({low.day:%b %d})"
        line += f"\nLow {low_text} · High {format_usd(high.cost_usd)} ({high.day:%b %d})"
    gaps = len(points) - len(known)
    if gaps:
        line += f"\n{plural(gaps, 'day')} without usage data (·)"
    return line


TEST_TEXT = "Test from Heliox"


def connection_test_message() -> SlackMessage:
    """What ``heliox send-test`` posts: the spec's curl check, as a message."""
    return SlackMessage.build(
        TEST_TEXT,
        [
            section(
                f"✅ *{TEST_TEXT}*\nSlack notifications are working: burn-rate alerts, idle-spend "
                "alerts and daily summaries will be posted to this channel."
            )
        ],
    )


def run_failure_message(
    job_name: str, step_key: str | None, error: str | None, *, run_url: str | None = None
) -> SlackMessage:
    """A short notice that an alert run failed: job, failed step, first error line, run link."""
    title = "🚨 Heliox Run Failed"
    first_line = next((line.strip() for line in (error or "").splitlines() if line.strip()), "")
    error_text = label(first_line, 500, missing="(no error message)")
    step = label(step_key, 200, missing="(before any step)")
    lines = [f"Job: {label(job_name, 200)}", f"Failed Step: {step}", f"Error: {error_text}"]
    blocks: list[Block] = [header(title), section(_bullets(lines))]
    if run_url:
        blocks.append(section(link(run_url, "View the run in Dagster")))
    fallback = f"{title}: {label(job_name, 200)} failed at {step}: {error_text}"
    return SlackMessage.build(fallback, blocks)


def stale_data_message(
    newest_usage_hour: dt.datetime | None, now: dt.datetime, stale_hours: int, timezone: str
) -> SlackMessage:
    """⏳ cost data is stale: a silent pipeline must not look like a cheap day."""
    title = "⏳ GPU Cost Data Is Stale"
    if newest_usage_hour is None:
        detail = "The Heliox database holds no GPU usage at all."
        fallback = f"{title}: no GPU usage data has arrived yet"
    else:
        # The newest row covers [hour, hour + 1h): data is complete up to its end.
        age_hours = int((now - newest_usage_hour - dt.timedelta(hours=1)) / dt.timedelta(hours=1))
        local = newest_usage_hour.astimezone(ZoneInfo(timezone))
        detail = (
            f"The newest GPU usage hour is {local:%Y-%m-%d %H:%M} ({timezone}), "
            f"{plural(age_hours, 'hour')} ago; data older than {plural(stale_hours, 'hour')} is stale."
        )
        fallback = f"{title}: newest GPU usage is {plural(age_hours, 'hour')} old"
    blocks: list[Block] = [
        header(title),
        section(detail),
        context(
            "Costs and burn-rate alerts are incomplete until data arrives: check the importer or export."
        ),
    ]
    return SlackMessage.build(fallback, blocks)


def with_note(message: SlackMessage, note: str) -> SlackMessage:
    """The message with one more context line (a late delivery, an escalation level)."""
    return SlackMessage.build(f"{message.text}\n{note}", [*message.blocks, context(note)])
