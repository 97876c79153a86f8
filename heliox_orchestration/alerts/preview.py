"""``heliox preview``: a message computed from the Heliox database as its job would on a date.

``run_date`` is the day the job runs: burn-rate looks at that day's spend, the daily summary
reports the day before it at ``DAILY_SUMMARY_HOUR``, idle-spend evaluates as of the end of that
day (or now, for today). Nothing is materialized and nothing is sent. Each alert kind's entry
names its preview function (``alerts/kinds.py``); ``alerts/catalog.py`` picks it.

The preview applies the data-quality rules the job's assets apply, to the same rows, before it
computes anything: where the job would be blocked, the preview says so (the rule, the counts,
example rows and what to fix) and shows no message, because there is none the job could send.
"""

from __future__ import annotations

from dataclasses import dataclass

from heliox_orchestration.alerts.messages import SlackMessage
from heliox_orchestration.costs.quality import RuleReport


@dataclass(frozen=True)
class Preview:
    message: SlackMessage | None  # None: the job would be blocked, so there is no message
    would_send: bool  # False: nothing crosses a threshold, or the job would be blocked
    note: str  # one line on what the job would do

    @property
    def blocked(self) -> bool:
        return self.message is None


def blocked(report: RuleReport, what: str, scope: str) -> Preview:
    """The preview of a job its input rows would block."""
    remedy = report.fix_in("gpu_usage_hourly", "preview again")
    return Preview(None, False, f"the job would be blocked: {report.refusal(what, scope, remedy)}")
