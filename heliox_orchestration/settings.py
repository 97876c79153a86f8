"""Heliox settings: the non-secret configuration, read from the environment and validated once.

Secrets (``SLACK_WEBHOOK_URL``, ``HELIOX_DATABASE_URL``, ``PROMETHEUS_BEARER_TOKEN``,
``PROMETHEUS_USERNAME``, ``PROMETHEUS_PASSWORD``) are *not* read here: they reach the
resources through ``dagster.EnvVar`` so their values never land in run config or Dagster's
storage. Everything here is validated when definitions load, so a bad value fails
``dagster dev`` with one clear message instead of failing a schedule at 9 AM.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from heliox_orchestration.env_values import (
    SettingsError,
    env_bool,
    env_cron,
    env_decimal,
    env_folder,
    env_int,
    env_optional_decimal,
    env_url,
)
from heliox_orchestration.home import (
    HOME_VAR,
    HomeError,
    embedded_database_path,
    installed_checkout,
    project_home,
)
from heliox_orchestration.routing import ROUTING_FILE_VAR, RoutingError, TeamRoute, load_routing_file

# The secret variables' names (their values are read by the resources, never here).
DATABASE_URL_VAR = "HELIOX_DATABASE_URL"
# Shown masked wherever configuration is printed (``heliox doctor``).
MASKED_VARIABLES = frozenset({"PROMETHEUS_BEARER_TOKEN", "PROMETHEUS_PASSWORD"})


@dataclass(frozen=True)
class Settings:
    timezone: str = "UTC"
    daily_summary_hour: int = 9
    burn_rate_threshold_usd: Decimal = Decimal("10000")
    # Further alert levels, in percent of the threshold, once a day is already over it.
    burn_rate_escalation_pct: tuple[int, ...] = (150, 200)
    burn_rate_check_cron: str = "0 8-20 * * *"
    idle_spend_check_cron: str = "0 10,16 * * *"
    start_date: dt.date = dt.date(2025, 1, 1)
    idle_lookback_days: int = 14
    idle_utilization_pct: Decimal = Decimal("5")
    idle_min_observed_hours: int = 24
    idle_min_idle_share_pct: Decimal = Decimal("95")
    idle_realert_days: int = 7
    stale_data_hours: int = 6
    max_hourly_cost_usd: Decimal = Decimal("10000")
    data_dir: Path = field(default_factory=lambda: Path("data"))
    dashboard_url: str | None = None
    webserver_url: str | None = None
    prometheus_url: str | None = None
    dcgm_mapping_path: Path | None = None
    # The alert kinds that are sent; None: all of them (names checked against the registry at load).
    alerts_enabled: tuple[str, ...] | None = None
    routing_file: Path | None = None
    teams: tuple[TeamRoute, ...] = ()  # read from routing_file
    idle_resolve_busy_hours: int = 6
    idle_resolve_gone_hours: int = 24
    focus_dir: Path | None = None
    # Days of hourly usage rows kept; None: all (see db/retention.py).
    retention_days: int | None = None
    # Spend anomaly: a day (or today so far) above its baseline by both this percent and these dollars.
    anomaly_pct: Decimal = Decimal("50")
    anomaly_min_usd: Decimal = Decimal("500")
    # Monthly budget of the fleet (None: no fleet budget); teams' budgets are in the routing file.
    monthly_budget_usd: Decimal | None = None
    budget_alert_levels: tuple[int, ...] = (50, 80, 100)
    # The project folder (``home.py``): relative paths of the embedded database are under it.
    home: Path | None = field(default_factory=installed_checkout)
    rightsize_utilization_pct: Decimal = Decimal("30")
    rightsize_alerts: bool = False

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def alert_enabled(self, kind: str) -> bool:
        return self.alerts_enabled is None or kind in self.alerts_enabled

    def team_route(self, team: str | None) -> TeamRoute | None:
        """The route of ``team`` in the routing file; None for a team it does not name."""
        return next((route for route in self.teams if route.team == team), None)

    @property
    def daily_summary_cron(self) -> str:
        return f"0 {self.daily_summary_hour} * * *"

    @property
    def embedded_database_path(self) -> Path:
        """The embedded SQLite file: the same from any working directory."""
        try:
            return embedded_database_path(self.data_dir, self.home)
        except HomeError as exc:
            raise SettingsError(str(exc)) from None

    def today(self, now: dt.datetime | None = None) -> dt.date:
        """The current local calendar day in ``TIMEZONE``."""
        now = now or dt.datetime.now(dt.UTC)
        return now.astimezone(self.tz).date()

    def yesterday(self, now: dt.datetime | None = None) -> dt.date:
        """The local day before today: the daily summary's report date."""
        return self.today(now) - dt.timedelta(days=1)

    def to_variables(self) -> dict[str, str]:
        """The environment variables that give these settings (``load_settings`` reads them back)."""
        variables = {}
        for name, variable in SETTING_VARIABLES.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, tuple):
                variables[variable] = ",".join(str(v) for v in value) or NO_ALERTS
            elif isinstance(value, dt.date):
                variables[variable] = value.isoformat()
            else:
                variables[variable] = str(value)
        return variables


# The variable of each setting.
SETTING_VARIABLES: dict[str, str] = {
    "timezone": "TIMEZONE",
    "daily_summary_hour": "DAILY_SUMMARY_HOUR",
    "burn_rate_threshold_usd": "BURN_RATE_THRESHOLD_USD",
    "burn_rate_escalation_pct": "BURN_RATE_ESCALATION_PCT",
    "burn_rate_check_cron": "BURN_RATE_CHECK_CRON",
    "idle_spend_check_cron": "IDLE_SPEND_CHECK_CRON",
    "start_date": "HELIOX_START_DATE",
    "idle_lookback_days": "IDLE_LOOKBACK_DAYS",
    "idle_utilization_pct": "IDLE_UTILIZATION_PCT",
    "idle_min_observed_hours": "IDLE_MIN_OBSERVED_HOURS",
    "idle_min_idle_share_pct": "IDLE_MIN_IDLE_SHARE_PCT",
    "idle_realert_days": "IDLE_REALERT_DAYS",
    "stale_data_hours": "STALE_DATA_HOURS",
    "max_hourly_cost_usd": "HELIOX_MAX_HOURLY_COST_USD",
    "data_dir": "HELIOX_DATA_DIR",
    "dashboard_url": "HELIOX_DASHBOARD_URL",
    "webserver_url": "DAGSTER_WEBSERVER_URL",
    "prometheus_url": "PROMETHEUS_URL",
    "dcgm_mapping_path": "HELIOX_DCGM_MAPPING",
    "alerts_enabled": "ALERTS_ENABLED",
    "routing_file": ROUTING_FILE_VAR,
    "idle_resolve_busy_hours": "IDLE_RESOLVE_BUSY_HOURS",
    "idle_resolve_gone_hours": "IDLE_RESOLVE_GONE_HOURS",
    "focus_dir": "HELIOX_FOCUS_DIR",
    "retention_days": "HELIOX_RETENTION_DAYS",
    "anomaly_pct": "ANOMALY_PCT",
    "anomaly_min_usd": "ANOMALY_MIN_USD",
    "monthly_budget_usd": "MONTHLY_BUDGET_USD",
    "budget_alert_levels": "BUDGET_ALERT_LEVELS",
    "home": HOME_VAR,
    "rightsize_utilization_pct": "RIGHTSIZE_UTILIZATION_PCT",
    "rightsize_alerts": "RIGHTSIZE_ALERTS",
}
ALL_ALERTS, NO_ALERTS = "all", "none"


# Name, default shown in docs, description. The README's table is checked against this list.
ENVIRONMENT_VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("SLACK_WEBHOOK_URL", "(unset: preview mode)", "Slack Incoming Webhook URL. Secret."),
    # One per alert kind, derived from its registry name (a test keeps them in step).
    ("SLACK_WEBHOOK_URL_BURN_RATE", "(unset: SLACK_WEBHOOK_URL)", "Webhook of the burn-rate alerts. Secret."),
    (
        "SLACK_WEBHOOK_URL_IDLE_SPEND",
        "(unset: SLACK_WEBHOOK_URL)",
        "Webhook of the idle-spend alerts. Secret.",
    ),
    (
        "SLACK_WEBHOOK_URL_IDLE_RESOLVED",
        "(unset: SLACK_WEBHOOK_URL_IDLE_SPEND)",
        "Webhook of the resolved idle GPUs. Secret.",
    ),
    (
        "SLACK_WEBHOOK_URL_DAILY_SUMMARY",
        "(unset: SLACK_WEBHOOK_URL)",
        "Webhook of the daily summary. Secret.",
    ),
    (
        "SLACK_WEBHOOK_URL_STALE_DATA",
        "(unset: SLACK_WEBHOOK_URL)",
        "Webhook of the stale-data alerts. Secret.",
    ),
    (
        "SLACK_WEBHOOK_URL_RUN_FAILURE",
        "(unset: SLACK_WEBHOOK_URL)",
        "Webhook of the run-failure notices. Secret.",
    ),
    (
        "SLACK_WEBHOOK_URL_SPEND_ANOMALY",
        "(unset: SLACK_WEBHOOK_URL)",
        "Webhook of the spend-anomaly alerts. Secret.",
    ),
    ("SLACK_WEBHOOK_URL_BUDGET", "(unset: SLACK_WEBHOOK_URL)", "Webhook of the budget alerts. Secret."),
    (ROUTING_FILE_VAR, "(unset: no teams)", "YAML file routing each team's alerts to its own webhook."),
    ("ALERTS_ENABLED", "all", "Alert kinds sent (comma-separated names, all or none)."),
    (DATABASE_URL_VAR, "sqlite:///data/heliox.db", "SQLAlchemy URL of the Heliox database."),
    (
        "HELIOX_ENV",
        "development",
        "development or production: production requires SLACK_WEBHOOK_URL and HELIOX_DATABASE_URL.",
    ),
    ("TIMEZONE", "UTC", "IANA time zone of local days and schedules."),
    ("DAILY_SUMMARY_HOUR", "9", "Local hour (0-23) of the daily summary."),
    ("BURN_RATE_THRESHOLD_USD", "10000", "Daily GPU spend that triggers a burn-rate alert."),
    ("BURN_RATE_ESCALATION_PCT", "150,200", "Further alert levels, % of the threshold."),
    ("BURN_RATE_CHECK_CRON", "0 8-20 * * *", "When to refresh today's cost and check burn rate."),
    ("IDLE_SPEND_CHECK_CRON", "0 10,16 * * *", "When to refresh idle findings and alert."),
    (
        "HELIOX_START_DATE",
        "2025-01-01",
        "First day partition (backfills start here); embedded demo: the demo window's first day.",
    ),
    ("IDLE_LOOKBACK_DAYS", "14", "Trailing window of the idle-GPU rule, days."),
    ("IDLE_UTILIZATION_PCT", "5", "An hour is idle below this GPU utilization, %."),
    ("IDLE_MIN_OBSERVED_HOURS", "24", "Hours a GPU must be observed to be judged."),
    ("IDLE_MIN_IDLE_SHARE_PCT", "95", "Share of idle hours that makes a finding, %."),
    ("IDLE_REALERT_DAYS", "7", "Days before the same idle GPU is alerted again."),
    (
        "RIGHTSIZE_UTILIZATION_PCT",
        "30",
        "Multi-GPU resources below this GPU-hour weighted mean utilization, %, are rightsizing findings.",
    ),
    ("RIGHTSIZE_ALERTS", "false", "true: rightsizing findings are alerted with the idle alert."),
    (
        "IDLE_RESOLVE_BUSY_HOURS",
        "6",
        "Hours at or above IDLE_UTILIZATION_PCT that resolve an alerted idle GPU.",
    ),
    (
        "IDLE_RESOLVE_GONE_HOURS",
        "24",
        "Hours without usage rows (while other GPUs report) that resolve it.",
    ),
    (
        "ANOMALY_PCT",
        "50",
        "A spend anomaly is at least this % above its baseline (and ANOMALY_MIN_USD above it).",
    ),
    ("ANOMALY_MIN_USD", "500", "A spend anomaly is at least these dollars above its baseline."),
    ("MONTHLY_BUDGET_USD", "(unset: no fleet budget)", "Monthly GPU budget of the fleet, local months."),
    ("BUDGET_ALERT_LEVELS", "50,80,100", "Month-to-date levels that alert, % of the budget."),
    ("STALE_DATA_HOURS", "6", "Newest usage older than this raises a stale-data alert."),
    (
        "HELIOX_MAX_HOURLY_COST_USD",
        "10000",
        "Largest plausible cost of one resource-hour; the FOCUS import refuses more.",
    ),
    (
        HOME_VAR,
        "(unset: the checkout Heliox is installed from)",
        "Project folder: a relative HELIOX_DATA_DIR and the default DAGSTER_HOME (.dagster) are under it.",
    ),
    ("HELIOX_DATA_DIR", "data", "Folder of the embedded SQLite database (relative: under HELIOX_HOME)."),
    ("HELIOX_DASHBOARD_URL", "(unset)", "Link target of 'Review them in your Heliox dashboard'."),
    ("DAGSTER_WEBSERVER_URL", "(unset)", "Base URL of the Dagster UI, for links to failed runs."),
    ("PROMETHEUS_URL", "(unset)", "Prometheus holding DCGM exporter metrics (docs/importing.md)."),
    ("PROMETHEUS_BEARER_TOKEN", "(unset)", "Bearer token for Prometheus. Secret."),
    ("PROMETHEUS_USERNAME", "(unset)", "Basic-auth user for Prometheus (with the password)."),
    ("PROMETHEUS_PASSWORD", "(unset)", "Basic-auth password for Prometheus. Secret."),
    ("HELIOX_DCGM_MAPPING", "(unset: defaults)", "YAML file mapping DCGM labels to resources, teams."),
    (
        "HELIOX_FOCUS_DIR",
        "(unset: no landing folder)",
        "Folder watched for FOCUS exports (CSV, CSV.gz, Parquet) to import.",
    ),
    (
        "HELIOX_RETENTION_DAYS",
        "(unset: keep all)",
        "Days of hourly usage rows kept; older months are dropped daily (docs/operations.md).",
    ),
)
# The daily summary reads 30 local days of usage rows: retention keeps at least that and today.
MIN_RETENTION_DAYS = 32


EARLIEST_START_DATE = dt.date(2000, 1, 1)


# Days of the demo fleet the embedded database is filled with (``ingest/demo_fleet.py``).
DEMO_WINDOW_DAYS = 45


def _start_date(env: Mapping[str, str], timezone: str) -> dt.date:
    raw = env.get("HELIOX_START_DATE", "").strip()
    if not raw and env.get(DATABASE_URL_VAR, "").strip():
        return Settings.start_date
    if not raw:
        # The embedded demo: partitions start with its window, not years before its data.
        return dt.datetime.now(ZoneInfo(timezone)).date() - dt.timedelta(days=DEMO_WINDOW_DAYS - 1)
    try:
        day = dt.date.fromisoformat(raw)
    except ValueError:
        raise SettingsError(f"HELIOX_START_DATE={raw!r} is not a date; use YYYY-MM-DD.") from None
    today = dt.datetime.now(ZoneInfo(timezone)).date()
    if not EARLIEST_START_DATE <= day <= today:
        raise SettingsError(
            f"HELIOX_START_DATE={raw} is out of range; allowed: {EARLIEST_START_DATE} through today "
            f"({today} in {timezone}), the first day that has (or will have) GPU usage data."
        )
    return day


def _prometheus_url(env: Mapping[str, str]) -> str | None:
    url = env_url(env, "PROMETHEUS_URL")
    if url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        raise SettingsError(
            "PROMETHEUS_URL must not contain credentials; put them in PROMETHEUS_USERNAME and "
            "PROMETHEUS_PASSWORD (or PROMETHEUS_BEARER_TOKEN)."
        )
    return url


def _alerts_enabled(env: Mapping[str, str]) -> tuple[str, ...] | None:
    """The kinds named by ``ALERTS_ENABLED``; None for all. Whether each name is a registered
    kind is checked with the environment (``environment.check_environment``)."""
    raw = env.get("ALERTS_ENABLED", "").strip()
    if not raw or raw.lower() == ALL_ALERTS:
        return None
    if raw.lower() == NO_ALERTS:
        return ()
    names = tuple(dict.fromkeys(name.strip() for name in raw.split(",") if name.strip()))
    if not names:
        raise SettingsError(
            f"ALERTS_ENABLED={raw!r} names no alert kind; give comma-separated kinds, "
            f"{ALL_ALERTS} or {NO_ALERTS}."
        )
    return names


def _budget_levels(env: Mapping[str, str]) -> tuple[int, ...]:
    raw = env.get("BUDGET_ALERT_LEVELS", "").strip()
    if not raw:
        return Settings.budget_alert_levels
    problem = (
        f"BUDGET_ALERT_LEVELS={raw!r} must be comma-separated whole percents from 1 to 1000, "
        "e.g. '50,80,100'."
    )
    try:
        levels = tuple(sorted({int(p) for p in raw.split(",") if p.strip()}))
    except ValueError:
        raise SettingsError(problem) from None
    if not levels or any(not 1 <= level <= 1000 for level in levels):
        raise SettingsError(problem)
    return levels


def _routing(env: Mapping[str, str]) -> tuple[Path | None, tuple[TeamRoute, ...]]:
    raw = env.get(ROUTING_FILE_VAR, "").strip()
    if not raw:
        return None, ()
    try:
        return Path(raw), load_routing_file(raw)
    except RoutingError as exc:
        raise SettingsError(str(exc)) from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every non-secret setting; raise SettingsError naming the variable."""
    env = os.environ if env is None else env

    timezone = env.get("TIMEZONE", "").strip() or "UTC"
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"TIMEZONE={timezone!r} is not an IANA time zone; use a name such as "
            "'UTC', 'America/Los_Angeles' or 'Europe/London'."
        ) from None

    raw_levels = env.get("BURN_RATE_ESCALATION_PCT", "").strip()
    levels: tuple[int, ...] = Settings.burn_rate_escalation_pct
    if raw_levels:
        try:
            levels = tuple(sorted({int(p) for p in raw_levels.split(",") if p.strip()}))
        except ValueError:
            raise SettingsError(
                f"BURN_RATE_ESCALATION_PCT={raw_levels!r} must be comma-separated whole percents "
                "above 100, e.g. '150,200'."
            ) from None
        if any(level <= 100 or level > 10_000 for level in levels):
            raise SettingsError(
                f"BURN_RATE_ESCALATION_PCT={raw_levels!r}: every level must be above 100 "
                "(percent of BURN_RATE_THRESHOLD_USD) and at most 10000."
            )

    start_date = _start_date(env, timezone)
    routing_file, teams = _routing(env)

    threshold = env_decimal(
        env,
        "BURN_RATE_THRESHOLD_USD",
        Settings.burn_rate_threshold_usd,
        Decimal("0.01"),
        Decimal("1000000000"),
    )
    return Settings(
        timezone=timezone,
        daily_summary_hour=env_int(env, "DAILY_SUMMARY_HOUR", Settings.daily_summary_hour, 0, 23),
        burn_rate_threshold_usd=threshold,
        burn_rate_escalation_pct=levels,
        burn_rate_check_cron=env_cron(env, "BURN_RATE_CHECK_CRON", Settings.burn_rate_check_cron),
        idle_spend_check_cron=env_cron(env, "IDLE_SPEND_CHECK_CRON", Settings.idle_spend_check_cron),
        start_date=start_date,
        idle_lookback_days=env_int(env, "IDLE_LOOKBACK_DAYS", Settings.idle_lookback_days, 1, 90),
        idle_utilization_pct=env_decimal(
            env, "IDLE_UTILIZATION_PCT", Settings.idle_utilization_pct, Decimal(0), Decimal(100)
        ),
        idle_min_observed_hours=env_int(
            env, "IDLE_MIN_OBSERVED_HOURS", Settings.idle_min_observed_hours, 1, 24 * 90
        ),
        idle_min_idle_share_pct=env_decimal(
            env, "IDLE_MIN_IDLE_SHARE_PCT", Settings.idle_min_idle_share_pct, Decimal(1), Decimal(100)
        ),
        idle_realert_days=env_int(env, "IDLE_REALERT_DAYS", Settings.idle_realert_days, 0, 365),
        stale_data_hours=env_int(env, "STALE_DATA_HOURS", Settings.stale_data_hours, 1, 24 * 30),
        # At most one charge's limit (ingest/focus/validation.MAX_CHARGE_USD).
        max_hourly_cost_usd=env_decimal(
            env,
            "HELIOX_MAX_HOURLY_COST_USD",
            Settings.max_hourly_cost_usd,
            Decimal("0.01"),
            Decimal(1_000_000_000),
        ),
        data_dir=Path(env.get("HELIOX_DATA_DIR", "").strip() or "data"),
        dashboard_url=env_url(env, "HELIOX_DASHBOARD_URL"),
        webserver_url=env_url(env, "DAGSTER_WEBSERVER_URL"),
        prometheus_url=_prometheus_url(env),
        dcgm_mapping_path=Path(mapping) if (mapping := env.get("HELIOX_DCGM_MAPPING", "").strip()) else None,
        alerts_enabled=_alerts_enabled(env),
        routing_file=routing_file,
        teams=teams,
        idle_resolve_busy_hours=env_int(
            env, "IDLE_RESOLVE_BUSY_HOURS", Settings.idle_resolve_busy_hours, 1, 24 * 14
        ),
        idle_resolve_gone_hours=env_int(
            env, "IDLE_RESOLVE_GONE_HOURS", Settings.idle_resolve_gone_hours, 1, 24 * 14
        ),
        focus_dir=env_folder(env, "HELIOX_FOCUS_DIR"),
        retention_days=_retention_days(env),
        anomaly_pct=env_decimal(env, "ANOMALY_PCT", Settings.anomaly_pct, Decimal(1), Decimal(10_000)),
        anomaly_min_usd=env_decimal(
            env, "ANOMALY_MIN_USD", Settings.anomaly_min_usd, Decimal(0), Decimal(1_000_000_000)
        ),
        monthly_budget_usd=env_optional_decimal(
            env, "MONTHLY_BUDGET_USD", Decimal("0.01"), Decimal(1_000_000_000_000)
        ),
        budget_alert_levels=_budget_levels(env),
        home=_home(env),
        rightsize_utilization_pct=env_decimal(
            env, "RIGHTSIZE_UTILIZATION_PCT", Settings.rightsize_utilization_pct, Decimal(1), Decimal(100)
        ),
        rightsize_alerts=env_bool(env, "RIGHTSIZE_ALERTS", Settings.rightsize_alerts),
    )


def _retention_days(env: Mapping[str, str]) -> int | None:
    if not env.get("HELIOX_RETENTION_DAYS", "").strip():
        return None
    days = env_int(env, "HELIOX_RETENTION_DAYS", 0, MIN_RETENTION_DAYS, 36_500)
    lookback = env_int(env, "IDLE_LOOKBACK_DAYS", Settings.idle_lookback_days, 1, 90)
    if days <= lookback:
        raise SettingsError(
            f"HELIOX_RETENTION_DAYS={days} would drop usage rows the idle rule reads "
            f"(IDLE_LOOKBACK_DAYS={lookback}); keep more days than that, or unset it to keep all."
        )
    return days


def _home(env: Mapping[str, str]) -> Path | None:
    try:
        return project_home(env)
    except HomeError as exc:
        raise SettingsError(str(exc)) from None
