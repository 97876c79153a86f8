"""The Slack messages: the spec's three examples, number formats, escaping and Block Kit limits."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal

import pytest
from slack_sdk.models.blocks import ContextBlock, DividerBlock, HeaderBlock, SectionBlock

from heliox_orchestration.alerts.formatting import (
    escape,
    link,
    percent,
    sparkline,
    truncate,
    truncate_mrkdwn,
)
from heliox_orchestration.alerts.messages import (
    MAX_BLOCKS,
    MAX_FALLBACK_CHARS,
    SlackMessage,
    burn_rate_message,
    connection_test_message,
    daily_summary_message,
    fields,
    header,
    idle_spend_message,
    render_plain_text,
    run_failure_message,
    section,
)
from heliox_orchestration.money import format_usd
from heliox_orchestration.reports import (
    BurnRateStatus,
    CostDriver,
    CostSummary,
    DailyCostPoint,
    IdleFinding,
    IdleSpendReport,
)
from heliox_orchestration_tests.slack_server import validate_payload

# The three examples of the product spec (heliox-slack-alerting.md), verbatim.
SPEC_BURN_RATE = """
🔥 High Burn Rate Alert

Daily GPU spending has exceeded the threshold!

• Date: 2026-01-09
• Daily Cost: $15,234.56
• Threshold: $10,000.00
• Over by: $5,234.56 (52.3%)

💡 Review your GPU usage to identify cost drivers
"""

SPEC_IDLE_SPEND = """
⚠️ Idle GPU Spend Detected

High-severity idle spend recommendations found!

• Total Potential Savings: $2,376.00/month
• Number of Issues: 2

1. Idle GPU: H100 on AWS
100% idle for 14 days
💰 Savings: $1,176.00/month

2. Idle GPU: A100 on GCP
100% idle for 7 days
💰 Savings: $1,200.00/month
"""

SPEC_DAILY_SUMMARY = """
📊 Heliox Daily Summary

Yesterday:          Last 7 Days:
$11,234.56         $78,456.78

Last 30 Days:       Potential Savings:
$324,567.89        $2,376.00/mo

━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━

Top GPU Consumers (Yesterday):
• Stable Diffusion XL: $5,123.45
• GPT-4: $3,456.78
• BERT: $1,234.56

━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━

⚠️ 2 high-severity recommendations available
Review them in your Heliox dashboard
"""

NOW = dt.datetime(2026, 1, 9, 17, 0, tzinfo=dt.UTC)
HOSTILE = ["<!channel>", "<https://evil|click>", "<!here> & <@U123>", "a > b & c < d"]


def _normalized_lines(text: str) -> list[str]:
    """Non-blank lines with runs of blanks collapsed; a divider of any length is one divider."""
    lines = [re.sub(r"\s+", " ", line).strip() for line in text.splitlines()]
    return [("━" if set(line) == {"━"} else line) for line in lines if line]


def assert_lines_in_order(expected: str, actual: str) -> None:
    remaining = iter(_normalized_lines(actual))
    for line in _normalized_lines(expected):
        assert any(line == candidate for candidate in remaining), (
            f"{line!r} missing or out of order in:\n{actual}"
        )


def finding(
    title: str = "Idle GPU: H100 on AWS",
    detail: str = "100% idle for 14 days",
    savings: str = "1176",
    **overrides: object,
) -> IdleFinding:
    values: dict = {
        "resource_id": "i-0h100",
        "provider": "aws",
        "gpu_type": "H100",
        "gpu_count": 1,
        "region": "us-east-1",
        "model_name": None,
        "team": "research",
        "idle_days": 14,
        "idle_pct": 100,
        "monthly_savings_usd": Decimal(savings),
        "severity": "high",
        "title": title,
        "detail": detail,
        **overrides,
    }
    return IdleFinding(**values)


def spec_idle_report() -> IdleSpendReport:
    return IdleSpendReport(
        as_of=NOW,
        findings=(
            finding(),
            finding("Idle GPU: A100 on GCP", "100% idle for 7 days", "1200", provider="gcp", gpu_type="A100"),
        ),
    )


def spec_summary(**overrides: object) -> CostSummary:
    values: dict = {
        "report_date": dt.date(2026, 1, 8),
        "yesterday_cost_usd": Decimal("11234.56"),
        "last_7_days_cost_usd": Decimal("78456.78"),
        "last_30_days_cost_usd": Decimal("324567.89"),
        "top_models": (
            CostDriver("Stable Diffusion XL", Decimal("5123.45")),
            CostDriver("GPT-4", Decimal("3456.78")),
            CostDriver("BERT", Decimal("1234.56")),
        ),
        "high_severity_count": 2,
        "potential_savings_monthly_usd": Decimal("2376.00"),
        **overrides,
    }
    return CostSummary(**values)


def all_texts(payload: dict) -> list[str]:
    """Every string Slack would render as text, the fallback included."""
    texts = [payload["text"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                texts.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(payload["blocks"])
    return texts


# --- the spec's examples ---------------------------------------------------------------------


def test_burn_rate_reproduces_the_spec_example() -> None:
    status = BurnRateStatus(
        day=dt.date(2026, 1, 9), cost_usd=Decimal("15234.56"), threshold_usd=Decimal("10000")
    )
    message = burn_rate_message(status)
    assert message.to_plain_text() == SPEC_BURN_RATE.strip()
    mrkdwn = "\n".join(all_texts(message.to_payload()))
    for exact in ("$15,234.56", "$10,000.00", "$5,234.56 (52.3%)", "🔥 High Burn Rate Alert"):
        assert exact in mrkdwn
    assert "over the $10,000.00 threshold by $5,234.56 (52.3%)" in message.text
    assert isinstance(message.blocks[0], HeaderBlock)
    assert isinstance(message.blocks[-1], ContextBlock)


def test_idle_spend_reproduces_the_spec_example() -> None:
    message = idle_spend_message(spec_idle_report())
    assert_lines_in_order(SPEC_IDLE_SPEND, message.to_plain_text())
    mrkdwn = "\n".join(all_texts(message.to_payload()))
    for exact in ("$2,376.00/month", "1. Idle GPU: H100 on AWS", "💰 Savings: $1,176.00/month"):
        assert exact in mrkdwn
    assert message.text == "⚠️ Idle GPU Spend Detected: 2 issues, $2,376.00/month potential savings"


def test_daily_summary_reproduces_the_spec_example() -> None:
    message = daily_summary_message(spec_summary())
    assert_lines_in_order(SPEC_DAILY_SUMMARY, message.to_plain_text())
    payload = message.to_payload()
    fields_block = next(b for b in payload["blocks"] if "fields" in b)
    assert [f["text"] for f in fields_block["fields"]] == [
        "*Yesterday:*\n$11,234.56",
        "*Last 7 Days:*\n$78,456.78",
        "*Last 30 Days:*\n$324,567.89",
        "*Potential Savings:*\n$2,376.00/mo",
    ]
    assert sum(isinstance(b, DividerBlock) for b in message.blocks) == 2
    assert "yesterday $11,234.56" in message.text


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("12345.67", "$12,345.67"),
        ("0.005", "$0.01"),  # half-up, not half-even
        ("2.675", "$2.68"),  # exact decimal: a float would give 2.67
        ("1234567.894999", "$1,234,567.89"),
        ("0", "$0.00"),
        ("-5", "-$5.00"),
    ],
)
def test_money_is_half_up_to_the_cent(amount: str, shown: str) -> None:
    assert format_usd(Decimal(amount)) == shown


@pytest.mark.parametrize(("value", "shown"), [("52.3456", "52.3%"), ("52.25", "52.3%"), ("100", "100.0%")])
def test_percent_has_one_decimal_half_up(value: str, shown: str) -> None:
    assert percent(Decimal(value)) == shown


def test_over_percentage_of_the_spec() -> None:
    status = BurnRateStatus(dt.date(2026, 1, 9), Decimal("15234.56"), Decimal("10000"))
    assert percent(status.over_pct) == "52.3%"


def test_burn_rate_today_shows_projection_and_top_drivers() -> None:
    status = BurnRateStatus(
        day=dt.date(2026, 1, 9),
        cost_usd=Decimal("12000"),
        threshold_usd=Decimal("10000"),
        top_drivers=(
            CostDriver("Llama 3 70B", Decimal("6000")),
            CostDriver("Unattributed", Decimal("4000")),
            CostDriver("BERT", Decimal("1500")),
            CostDriver("ignored fourth", Decimal("500")),
        ),
        is_today=True,
        hours_elapsed=Decimal("12"),
        projected_cost_usd=Decimal("24000"),
    )
    text = burn_rate_message(status).to_plain_text()
    assert "• Daily Cost: $12,000.00 so far" in text
    assert "• Projected End of Day: $24,000.00 (at the current $1,000.00/hour over 24 hours)" in text
    assert (
        "Top Cost Drivers (2026-01-09):\n• Llama 3 70B: $6,000.00\n• Unattributed: $4,000.00\n• BERT:" in text
    )
    assert "ignored fourth" not in text


def test_burn_rate_below_threshold_says_so() -> None:
    status = BurnRateStatus(dt.date(2026, 1, 9), Decimal("8000"), Decimal("10000"))
    message = burn_rate_message(status)
    assert "High Burn Rate" not in message.to_plain_text()
    assert "• Under by: $2,000.00 (20.0%)" in message.to_plain_text()
    assert "within the $10,000.00 threshold" in message.text


def test_idle_spend_lists_top_three_then_and_n_more() -> None:
    findings = tuple(finding(f"Idle GPU: H100 #{i}", savings=str(1000 - i)) for i in range(5))
    text = idle_spend_message(IdleSpendReport(as_of=NOW, findings=findings)).to_plain_text()
    assert "3. Idle GPU: H100 #2" in text and "4. Idle GPU" not in text
    assert "...and 2 more" in text
    assert "• Number of Issues: 5" in text


def test_idle_spend_without_findings_says_so() -> None:
    message = idle_spend_message(IdleSpendReport(as_of=NOW, findings=()))
    assert "No idle spend" in message.to_plain_text() and "Detected" not in message.text


def test_daily_summary_dashboard_link_sparkline_and_gaps() -> None:
    series = tuple(
        DailyCostPoint(dt.date(2026, 1, 2) + dt.timedelta(days=i), Decimal(1000 * i), has_data=i != 3)
        for i in range(7)
    )
    message = daily_summary_message(
        spec_summary(daily_series=series), dashboard_url="https://heliox.example.com/recs?x=1&y=2"
    )
    mrkdwn = "\n".join(all_texts(message.to_payload()))
    assert "<https://heliox.example.com/recs?x=1&amp;y=2|Review them in your Heliox dashboard>" in mrkdwn
    assert "▁▂▃·▆▇█" in mrkdwn
    assert "1 day without usage data (·)" in mrkdwn
    assert "Review them in your Heliox dashboard (https://heliox.example.com/recs?x=1&y=2)" in (
        message.to_plain_text()
    )


def test_daily_summary_counts_in_the_singular_and_zero() -> None:
    assert "⚠️ 1 high-severity recommendation available" in (
        daily_summary_message(spec_summary(high_severity_count=1)).to_plain_text()
    )
    zero = daily_summary_message(spec_summary(high_severity_count=0)).to_plain_text()
    assert "No high-severity recommendations" in zero and "Review them" not in zero


def test_days_without_usage_data_are_called_out() -> None:
    gaps = tuple(dt.date(2026, 1, d) for d in range(1, 8))
    text = daily_summary_message(spec_summary(gap_days=gaps)).to_plain_text()
    assert (
        "⚠️ No usage data on 7 days of the last 30: Jan 01, Jan 02, Jan 03, Jan 04, Jan 05 and 2 more" in text
    )
    status = BurnRateStatus(dt.date(2026, 1, 9), Decimal(0), Decimal(10000), has_data=False)
    assert "• Daily Cost: $0.00 (no usage data)" in burn_rate_message(status).to_plain_text()


def test_sparkline_scales_and_marks_gaps() -> None:
    assert sparkline([Decimal(0), None, Decimal(7)]) == "▁·█"
    assert sparkline([Decimal(5), Decimal(5)]) == "▄▄"
    assert sparkline([None, None]) == "··"


def test_connection_test_message() -> None:
    message = connection_test_message()
    assert message.text == "Test from Heliox"
    assert "Test from Heliox" in message.to_plain_text()
    assert validate_payload(json.dumps(message.to_payload()).encode()) is None


def test_run_failure_message_takes_the_first_error_line_and_links_the_run() -> None:
    message = run_failure_message(
        "burn_rate_alert_job",
        "send_burn_rate_alert",
        "\n  SlackDeliveryError: Slack refused <!channel>\nTraceback (most recent call last):",
        run_url="http://dagster.example.com/runs/1234",
    )
    text = message.to_plain_text()
    assert "• Job: burn_rate_alert_job" in text
    assert "• Failed Step: send_burn_rate_alert" in text
    assert "• Error: SlackDeliveryError: Slack refused <!channel>" in text
    assert "Traceback" not in text
    payload = message.to_payload()
    assert "<http://dagster.example.com/runs/1234|View the run in Dagster>" in json.dumps(payload)
    assert "<!channel>" not in json.dumps(payload)
    assert "(before any step)" in run_failure_message("job", None, None).to_plain_text()


def test_render_plain_text_of_a_text_only_payload() -> None:
    assert render_plain_text({"text": "*Hi* &lt;there&gt; <https://x.example|link>"}) == (
        "Hi <there> link (https://x.example)"
    )


# --- untrusted text --------------------------------------------------------------------------


def hostile_messages() -> list[SlackMessage]:
    evil = " ".join(HOSTILE)
    drivers = tuple(CostDriver(f"{name} model", Decimal(100)) for name in HOSTILE)
    findings = tuple(
        finding(
            title=f"Idle GPU: {name}",
            detail=name,
            resource_id=name,
            region=name,
            team=name,
            model_name=name,
        )
        for name in HOSTILE
    )
    return [
        burn_rate_message(BurnRateStatus(dt.date(2026, 1, 9), Decimal(20000), Decimal(10000), drivers)),
        idle_spend_message(IdleSpendReport(as_of=NOW, findings=findings)),
        daily_summary_message(spec_summary(top_models=drivers)),
        run_failure_message(evil, evil, evil),
    ]


@pytest.mark.parametrize("index", range(4))
def test_hostile_names_cannot_mention_or_link(index: int) -> None:
    message = hostile_messages()[index]
    texts = all_texts(message.to_payload())
    joined = "\n".join(texts)
    for raw in ("<!channel>", "<https://evil|click>", "<!here>", "<@U123>"):
        assert raw not in joined
    # No "<" survives at all: these messages have no links of their own.
    assert all("<" not in text and ">" not in text for text in texts)
    assert "&lt;!channel&gt;" in joined
    # ...and the reader still sees the names as they are.
    assert "<!channel>" in message.to_plain_text()


def test_escape_and_link() -> None:
    assert escape("a & <b>") == "a &amp; &lt;b&gt;"
    assert link("https://x.example/a b|c>d", "label") == "<https://x.example/a%20b%7Cc%3Ed|label>"


# --- Block Kit limits ------------------------------------------------------------------------


def test_truncation_ends_with_an_ellipsis_and_never_splits_an_entity_or_a_link() -> None:
    assert truncate("abcdef", 4) == "abc…"
    assert truncate("abc", 3) == "abc"
    cut = truncate_mrkdwn("x" * 8 + "&amp;", 11)
    assert cut == "x" * 8 + "…"
    cut = truncate_mrkdwn("see <https://example.com|the dashboard> now", 20)
    assert cut == "see…"


def test_block_helpers_respect_slacks_limits() -> None:
    assert len(header("h" * 400).to_dict()["text"]["text"]) == 150
    assert len(section("s" * 5000).to_dict()["text"]["text"]) == 3000
    many = fields(*("f" * 2500 for _ in range(14))).to_dict()["fields"]
    assert len(many) == 10 and all(len(f["text"]) == 2000 for f in many)
    message = SlackMessage.build("t" * 5000, [section(str(i)) for i in range(70)])
    payload = message.to_payload()
    assert len(payload["blocks"]) == MAX_BLOCKS
    assert payload["blocks"][-1]["elements"][0]["text"] == "… 21 more not shown"
    assert len(payload["text"]) == MAX_FALLBACK_CHARS and payload["text"].endswith("…")
    assert validate_payload(json.dumps(payload).encode()) is None


def huge_messages() -> list[SlackMessage]:
    long_name = "M" * 2000
    drivers = tuple(CostDriver(long_name + str(i), Decimal(1000 - i)) for i in range(3))
    findings = tuple(
        finding(
            title=f"Idle GPU: {long_name}",
            detail=long_name,
            resource_id=long_name,
            team=long_name,
            model_name=long_name,
            savings=str(5000 - i),
        )
        for i in range(500)
    )
    series = tuple(DailyCostPoint(dt.date(2026, 1, 2) + dt.timedelta(days=i), Decimal(i)) for i in range(7))
    return [
        burn_rate_message(BurnRateStatus(dt.date(2026, 1, 9), Decimal(20000), Decimal(10000), drivers)),
        idle_spend_message(IdleSpendReport(as_of=NOW, findings=findings)),
        daily_summary_message(spec_summary(top_models=drivers, daily_series=series)),
        run_failure_message(long_name, long_name, long_name * 3),
    ]


@pytest.mark.parametrize("index", range(4))
def test_500_findings_and_2000_character_names_fit_block_kit(index: int) -> None:
    message = huge_messages()[index]
    payload = message.to_payload()
    assert validate_payload(json.dumps(payload).encode()) is None
    assert all(
        isinstance(b, HeaderBlock | SectionBlock | ContextBlock | DividerBlock) for b in message.blocks
    )
    assert "…" in message.to_plain_text()
    if index == 1:
        assert "...and 497 more" in message.to_plain_text()
        assert "• Number of Issues: 500" in message.to_plain_text()
