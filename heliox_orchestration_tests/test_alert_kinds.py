"""The alert-kind registry: every key fits the ledger and parses back, and a new kind is keyed,
delivered and redelivered through the registry alone."""

import datetime as dt

import pytest
from dagster import Config
from sqlalchemy import Engine

from heliox_orchestration.alerts import kinds
from heliox_orchestration.alerts.burn_rate import burn_rate_key
from heliox_orchestration.alerts.detection import Alert, AlertRun, Detection
from heliox_orchestration.alerts.idle_spend import idle_key, idle_key_prefix
from heliox_orchestration.alerts.kinds import (
    FIELD_MAX,
    MAX_KEY_CHARS,
    AfterRefresh,
    AlertKeyError,
    AlertKind,
    KeyField,
    fit,
)
from heliox_orchestration.alerts.messages import connection_test_message
from heliox_orchestration.alerts.run_failure import run_failure_key
from heliox_orchestration.alerts.stale_data import NO_DATA, stale_key
from heliox_orchestration.db.alert_schema import alert_ledger
from heliox_orchestration.settings import ENVIRONMENT_VARIABLES
from heliox_orchestration_tests.automation_env import NOW, make_heliox, requests_of
from heliox_orchestration_tests.slack_server import FakeSlackWebhook, Reply

LONG_ID = "arn:aws:ec2:us-east-1:123456789012:instance/" + "i-" + "0123456789abcdef" * 14  # 270 chars
SAMPLES: dict[str, list[tuple[object, ...]]] = {
    "burn-rate": [("2026-01-09", 100), ("2026-01-09", 10000)],
    "idle-spend": [
        ("gpu-a", "2026-W02"),
        ("arn:aws:ec2:us-east-1:1:instance/i-1", "2026-W53"),
        ("x" * 255, "2026-W02"),
        (LONG_ID, "2026-W02"),
    ],
    "idle-resolved": [("gpu-a", "20260112T0500Z"), (LONG_ID, "20260112T0500Z")],
    "daily-summary": [("2026-01-08",)],
    "stale-data": [("2026-01-09T07:00:00+00:00",), (NO_DATA,)],
    "run-failure": [("35872227-0442-41bc-8165-5f08f3e36c8e",)],
    "budget": [("2026-03", 50), ("2026-03", 1000), ("2026-03", "forecast")],
    "spend-anomaly": [
        ("2026-01-09", "total", "all"),
        ("2026-01-09", "model", "Stable Diffusion XL: v2"),
        ("2026-01-09", "model", "m" * 255),
        ("2026-01-09", "team", "t" * 128),
    ],
}


def test_the_key_limits_are_the_ledger_columns() -> None:
    assert alert_ledger.c.alert_key.type.length == MAX_KEY_CHARS
    assert alert_ledger.c.alert_type.type.length == kinds.MAX_KIND_CHARS
    assert set(SAMPLES) == set(kinds.REGISTRY)
    for kind in kinds.REGISTRY.values():
        # Every key fits, a team destination included where a kind routes to teams; a kind that
        # does not still has room for one.
        assert kind.longest_key <= MAX_KEY_CHARS, kind.name
        room = 0 if kind.team_routed else FIELD_MAX + 1
        assert kind.longest_key + room <= MAX_KEY_CHARS, kind.name


@pytest.mark.parametrize("team", ["ml-platform", "team:with:colons", "t" * 200, "gpu\x00team"])
def test_a_team_destination_is_part_of_the_key_and_parses_back(team: str) -> None:
    idle = kinds.REGISTRY["idle-spend"]
    key = idle_key(LONG_ID, dt.date(2026, 1, 9), team=team)
    default = idle_key(LONG_ID, dt.date(2026, 1, 9))
    assert key != default and len(key) <= MAX_KEY_CHARS
    assert kinds.check_key(key) is idle
    assert idle.parse(key) == idle.parse(default)  # the same finding, another destination
    name, label = kinds.split_destination(key)
    assert name == "idle-spend" and label == kinds.destination_label(team) and ":" not in label
    assert key.startswith(idle_key_prefix(LONG_ID, team=team)) and idle.prefix_of(key) == idle_key_prefix(
        LONG_ID, team=team
    )
    assert not default.startswith(idle_key_prefix(LONG_ID, team=team))
    # A kind that only has a default destination refuses a team, and a team key of it.
    with pytest.raises(AlertKeyError):
        kinds.REGISTRY["daily-summary"].key("2026-01-08", team=team)
    with pytest.raises(AlertKeyError):
        kinds.check_key("daily-summary@ml:2026-01-08")


def test_each_kind_has_its_own_webhook_variable_documented() -> None:
    documented = {name for name, _, _ in ENVIRONMENT_VARIABLES}
    for kind in kinds.REGISTRY.values():
        assert kind.webhook_variable == "SLACK_WEBHOOK_URL_" + kind.name.upper().replace("-", "_")
        assert kind.webhook_variable in documented, kind.name
        assert kind.webhook_variables()[-1] == "SLACK_WEBHOOK_URL"
    assert kinds.REGISTRY["idle-resolved"].webhook_variables() == (
        "SLACK_WEBHOOK_URL_IDLE_RESOLVED",
        "SLACK_WEBHOOK_URL_IDLE_SPEND",
        "SLACK_WEBHOOK_URL",
    )


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_kind_key_round_trips_through_build_and_parse(name: str) -> None:
    kind = kinds.REGISTRY[name]
    for values in SAMPLES[name]:
        key = kind.key(*values)
        assert len(key) <= MAX_KEY_CHARS
        assert kinds.check_key(key) is kind
        fields = kind.parse(key)
        assert kind.join(fields) == key
        for field, value in zip(kind.fields, values, strict=True):
            expected = fit(str(value)) if field.free_text else str(value)
            assert fields[field.name] == expected
            if len(str(value)) < FIELD_MAX:
                assert fields[field.name] == str(value)  # short values stay readable


def test_long_and_unprintable_values_become_a_readable_prefix_plus_a_hash() -> None:
    fitted = fit(LONG_ID)
    assert len(fitted) == FIELD_MAX and fitted.startswith("arn:aws:ec2:us-east-1:123456789012:instance/i-")
    # Two long ids sharing their first 200 characters still get different keys.
    assert fit(LONG_ID + "a") != fit(LONG_ID + "b")
    # A value crafted to look like a fitted one is not kept as it is: no collision.
    assert fit(fitted) != fitted
    assert fit("y" * (FIELD_MAX - 1)) == "y" * (FIELD_MAX - 1)
    assert fit("gpu\x00a").isprintable() and fit("gpu\x00a") != fit("gpu?a")
    assert idle_key(LONG_ID, dt.date(2026, 1, 9)).startswith(idle_key_prefix(LONG_ID))


def test_malformed_keys_and_kinds_are_refused() -> None:
    bad_keys = ("nothing:1", "burn-rate:2026-01-09", "burn-rate:2026-01-09:100:7", "x" * 256, "stale-data:")
    for bad in bad_keys:
        with pytest.raises(AlertKeyError):
            kinds.check_key(bad)
    with pytest.raises(AlertKeyError):
        kinds.REGISTRY["burn-rate"].key("2026-01-09:00", 100)  # a fixed field never holds the separator
    too_long = AlertKind(
        name="too-long",
        job_name="j",
        op_name="o",
        fields=(KeyField("a"), KeyField("b", 200)),
        relevance="-",
        relevant_until=lambda f, now, tz: now,
        detect=detect_quota,
    )
    with pytest.raises(ValueError, match="longest key"):
        kinds.register(too_long)
    assert "too-long" not in kinds.REGISTRY


def test_redelivery_requests_come_from_the_registry() -> None:
    failed_at = NOW
    burn = kinds.redelivery_request(burn_rate_key(dt.date(2026, 1, 9), 150), failed_at)
    assert burn is not None and burn.job_name == "burn_rate_alert_job"
    assert burn.run_config == {"ops": {"send_burn_rate_alert": {"config": {"day": "2026-01-09"}}}}
    stale = kinds.redelivery_request(stale_key(None), failed_at)
    assert stale is not None and stale.run_config == {
        "ops": {"send_stale_data_alert": {"config": {"newest_usage_hour": None}}}
    }
    notice = kinds.redelivery_request(run_failure_key("run-1"), failed_at)
    assert notice is not None and notice.job_name == "run_failure_notice_job"
    idle = kinds.redelivery_request(idle_key("gpu-a", dt.date(2026, 1, 9)), failed_at)
    assert idle is not None and idle.job_name == "idle_spend_alert_job" and idle.run_config == {}
    assert kinds.redelivery_request("unknown-kind:1", failed_at) is None


# --- a new kind, from the registry alone ------------------------------------------------------


class QuotaConfig(Config):
    team: str = "ml-research"


def detect_quota(run: AlertRun) -> Detection:
    """The dummy kind's detection: one alert per team and day."""
    assert isinstance(run.config, QuotaConfig)
    key = QUOTA_KEY.format(team=run.config.team, day=run.now.date().isoformat())
    return Detection([Alert([key], connection_test_message())])


QUOTA_KEY = "quota:{team}:{day}"


def _quota_kind() -> AlertKind:
    return AlertKind(
        name="quota",
        job_name="quota_alert_job",
        op_name="send_quota_alert",
        fields=(KeyField("team"), KeyField("day", 10)),
        relevance="2 hours",
        relevant_until=lambda fields, now, tz: now + dt.timedelta(hours=2),
        detect=detect_quota,
        config=QuotaConfig,
        trigger=AfterRefresh(
            sensor_name="quota_alert_sensor",
            refresh_job="idle_recommendations_refresh_job",
            description="After each idle refresh, the quota of the team.",
        ),
        redelivery_config=lambda fields: {"team": fields["team"]},
        redelivery_scope=lambda fields: fields["team"],
    )


def test_a_new_kind_is_scheduled_keyed_delivered_and_redelivered_through_the_registry(
    sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One registry entry (detection, config, trigger) is all a new kind needs: the definitions
    get its job, its sensor after the refresh it names and its redelivery."""
    monkeypatch.setattr(kinds, "REGISTRY", dict(kinds.REGISTRY))
    quota = kinds.register(_quota_kind())
    assert quota.job_name in kinds.redelivered_job_names()
    heliox = make_heliox(sqlite_engine, slack_server, monkeypatch)  # definitions built after register
    assert heliox.defs.resolve_job_def("quota_alert_job").tags["dagster/max_runtime"] == "300"

    refresh = heliox.run_job("idle_recommendations_refresh_job")
    assert refresh.success
    request = heliox.after_success("quota_alert_sensor", refresh)
    assert request.job_name in (None, "quota_alert_job")
    assert request.run_key == f"quota-after:{refresh.run_id}"

    slack_server.script(*[Reply.error(503, "service_unavailable")] * 4)
    first = heliox.run_request(request, "quota_alert_job")
    assert not first.success
    key = "quota:ml-research:2026-01-09"
    assert heliox.ledger()[key]["status"] == "failed" and heliox.ledger()[key]["attempts"] == 4

    heliox.at(NOW + dt.timedelta(minutes=12))
    (redelivery,) = requests_of(heliox.tick("alert_redelivery_sensor"))
    assert redelivery.job_name == "quota_alert_job"
    assert redelivery.run_key is not None and redelivery.run_key.startswith("redeliver:quota:ml-research:")
    assert heliox.run_request(redelivery).success
    assert [r.status for r in slack_server.requests] == [503] * 4 + [200]
    assert "Late delivery" in heliox.texts()[-1]
    assert heliox.ledger()[key]["status"] == "sent" and heliox.ledger()[key]["attempts"] == 5
    assert requests_of(heliox.tick("alert_redelivery_sensor")) == []
