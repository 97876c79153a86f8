"""The alert tables, on the shared ``metadata``: the ledger (one row per alert key, whose unique key
decides who sends), the mutes and the alerts they held back, and the idle GPUs alerted on until
they resolve (``alerts/ledger.py``, ``alerts/mutes.py``, ``detections/resolution.py``)."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, Index, Integer, PrimaryKeyConstraint, String, Table

from heliox_orchestration.db.schema import Money, UTCDateTime, metadata

# --- Alert ledger (automation): one row per alert key; the unique key decides who sends. ---
alert_ledger = Table(
    "alert_ledger",
    metadata,
    Column("alert_key", String(255), primary_key=True, comment="e.g. burn-rate:2026-01-09:100"),
    Column("alert_type", String(32), nullable=False),
    Column("status", String(16), nullable=False, comment="sending | sent | failed | previewed"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("http_status", Integer, nullable=True),
    Column("last_error", String(1000), nullable=True, comment="masked: never holds the webhook"),
    Column("payload_sha256", String(64), nullable=True),
    Column("run_id", String(64), nullable=True),
    Column("relevant_until", UTCDateTime(), nullable=True, comment="redeliver a failure until"),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime(), nullable=True),
    Column(
        "refused_webhook",
        String(16),
        nullable=True,
        comment="failed because this webhook (a fingerprint, never the URL) refused it: not retried with it",
    ),
    CheckConstraint("status IN ('sending', 'sent', 'failed', 'previewed')", name="ck_alert_ledger_status"),
)
Index("ix_alert_ledger_created_at", alert_ledger.c.created_at)

# --- Alert routing (heliox_orchestration.alerts.mutes, detections.resolution): mutes, the alerts
# they held back, and the idle GPUs alerted on until they stop costing money.
alert_mutes = Table(
    "alert_mutes",
    metadata,
    Column("mute_id", Integer, primary_key=True, autoincrement=True),
    Column("alert_type", String(32), nullable=False, comment="the alert kind muted"),
    Column(
        "scope", String(16), nullable=True, comment="team | resource | model; NULL: every alert of the kind"
    ),
    Column("scope_value", String(255), nullable=True, comment="the team, resource or model muted"),
    Column("muted_from", UTCDateTime(), nullable=False),
    Column("muted_until", UTCDateTime(), nullable=False, comment="the mute ends by itself then"),
    Column("reason", String(500), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("ended_at", UTCDateTime(), nullable=True, comment="ended early by `heliox unmute`"),
    Column("ended_by", String(128), nullable=True),
    CheckConstraint("scope IN ('team', 'resource', 'model')", name="ck_alert_mutes_scope"),
    CheckConstraint("muted_until > muted_from", name="ck_alert_mutes_period"),
    comment="`heliox mute`: alerts not sent while a mute lasts.",
)

muted_alerts = Table(
    "muted_alerts",
    metadata,
    Column("alert_key", String(255), nullable=False, comment="the ledger key the alert would have had"),
    Column("mute_id", Integer, nullable=False),
    Column("alert_type", String(32), nullable=False),
    Column("muted_at", UTCDateTime(), nullable=False, comment="first held back"),
    PrimaryKeyConstraint("alert_key", "mute_id", name="pk_muted_alerts"),
    comment="Alerts a mute held back (`heliox alerts` shows them as muted).",
)
Index("ix_muted_alerts_muted_at", muted_alerts.c.muted_at)

idle_gpu_episodes = Table(
    "idle_gpu_episodes",
    metadata,
    Column("episode_id", Integer, primary_key=True, autoincrement=True),
    Column("resource_id", String(255), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("gpu_type", String(32), nullable=False),
    Column("team", String(128), nullable=True),
    Column("model_name", String(255), nullable=True),
    Column("title", String(255), nullable=False, comment="Idle GPU: H100 on AWS"),
    Column("alerted_at", UTCDateTime(), nullable=False, comment="its first idle alert was delivered"),
    Column("hourly_cost_usd", Money(), nullable=False, comment="mean over the idle streak, latest"),
    Column("monthly_savings_usd", Money(), nullable=False, comment="hourly_cost_usd x 730"),
    Column("resolved_at", UTCDateTime(), nullable=True, comment="start of the first hour not spent idle"),
    Column("resolution", String(8), nullable=True, comment="busy | gone"),
    Column("resolution_detail", String(255), nullable=True),
    Column("resolution_found_at", UTCDateTime(), nullable=True, comment="the idle evaluation that found it"),
    Column("reopened_at", UTCDateTime(), nullable=True, comment="idle again from this hour: savings end"),
    CheckConstraint("resolution IN ('busy', 'gone')", name="ck_idle_gpu_episodes_resolution"),
    comment="Idle GPUs alerted on: open until they resolve; the savings realized since.",
)
# One open episode per GPU: two alert runs racing to open one insert one row.
Index(
    "ux_idle_gpu_episodes_open",
    idle_gpu_episodes.c.resource_id,
    unique=True,
    sqlite_where=idle_gpu_episodes.c.resolved_at.is_(None),
    postgresql_where=idle_gpu_episodes.c.resolved_at.is_(None),
)
Index("ix_idle_gpu_episodes_resolved_at", idle_gpu_episodes.c.resolved_at)
