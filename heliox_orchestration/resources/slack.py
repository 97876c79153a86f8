"""Slack's Incoming Webhook as a Dagster resource, on slack-sdk's ``WebhookClient``.

* 10-second timeout; up to 3 retries with exponential backoff for connection errors, read
  timeouts, HTTP 5xx and 429 (after ``Retry-After``), through slack-sdk's retry handlers.
* Slack's permanent refusals (``invalid_payload``, ``channel_not_found``, ...) raise at once with
  what to fix. ``WebhookClient.send`` returns error responses instead of raising; we check them.
* One message per second per webhook in this process (Slack's documented limit).
* The URL is a secret: only ``mask_webhook_url`` of it is ever shown, in logs and exceptions.
* No URL: preview mode. Nothing is sent; the message is logged and returned as readable text.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import ipaddress
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from dagster import ConfigurableResource, EnvVar, InitResourceContext, MetadataValue, get_dagster_logger
from pydantic import Field

from heliox_orchestration.secrets import mask_webhook_url
from heliox_orchestration.settings import SettingsError

WEBHOOK_URL_VAR = "SLACK_WEBHOOK_URL"
PREVIEW_LINE = f"Slack notifications disabled (preview mode): {WEBHOOK_URL_VAR} is not set"

# Slack's error strings for refusals that a retry cannot fix, and what the operator should do.
_REPLACE_WEBHOOK = f"create a new Incoming Webhook in Slack and put its URL in {WEBHOOK_URL_VAR}"
SLACK_ERROR_HELP: Mapping[str, str] = {
    "invalid_payload": "Slack could not parse the message; this is a Heliox bug, please report it",
    "invalid_blocks": "Slack refused the message's Block Kit; this is a Heliox bug, please report it",
    "invalid_blocks_format": "Slack refused the message's Block Kit; this is a Heliox bug, please report it",
    "no_text": "the message had no text; this is a Heliox bug, please report it",
    "too_many_attachments": "the message had too many attachments; this is a Heliox bug, please report it",
    "action_prohibited": "a Slack admin has restricted posting with this webhook; ask an admin to allow "
    f"the app in the channel, or {_REPLACE_WEBHOOK}",
    "posting_to_general_channel_denied": "only admins may post to this channel; "
    f"{_REPLACE_WEBHOOK} for another channel",
    "channel_not_found": f"the webhook's channel was deleted or the app removed from it; {_REPLACE_WEBHOOK}",
    "channel_is_archived": "the webhook's channel is archived; unarchive it in Slack, or "
    f"{_REPLACE_WEBHOOK} for another channel",
    "no_service": f"the webhook was disabled or removed, or {WEBHOOK_URL_VAR} is mistyped; "
    f"{_REPLACE_WEBHOOK}",
    "no_service_id": f"{WEBHOOK_URL_VAR} is incomplete; copy the whole URL from Slack again",
    "no_team": f"{WEBHOOK_URL_VAR} is incomplete; copy the whole URL from Slack again",
    "invalid_token": f"the webhook's token is invalid or revoked; {_REPLACE_WEBHOOK}",
    "team_disabled": "the Slack workspace of the webhook is disabled",
    "user_not_found": f"the webhook's user no longer exists; {_REPLACE_WEBHOOK}",
}


class SlackError(Exception):
    """Base of the Slack errors. Messages show the webhook only masked."""


class SlackConfigError(SettingsError, SlackError):
    """``SLACK_WEBHOOK_URL`` is unusable. The message names the variable, never its value."""


class SlackDeliveryError(SlackError):
    """A message was not delivered: Slack refused it, or kept failing through every retry."""

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        http_status: int | None = None,
        slack_error: str | None = None,
        retryable: bool = False,
        payload_sha256: str | None = None,
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.http_status = http_status
        self.slack_error = slack_error
        self.retryable = retryable  # True: a later run may succeed; False: someone must fix something
        self.payload_sha256 = payload_sha256


class SlackPostable(Protocol):
    """What the resource sends: ``heliox_orchestration.alerts.messages.SlackMessage``."""

    def to_payload(self) -> dict[str, Any]: ...

    def to_plain_text(self) -> str: ...


@dataclass(frozen=True)
class SlackSendResult:
    """The outcome of one message, as the alert ledger records it."""

    status: Literal["sent", "previewed"]
    attempts: int  # HTTP requests made: 0 in preview mode
    http_status: int | None
    elapsed_seconds: float
    payload_sha256: str
    webhook: str  # masked
    preview_text: str | None = None  # the readable message, in preview mode

    def to_metadata(self) -> dict[str, MetadataValue]:
        """Dagster metadata (``context.add_output_metadata`` or ``MaterializeResult``)."""
        metadata: dict[str, MetadataValue] = {
            "slack_status": MetadataValue.text(self.status),
            "slack_webhook": MetadataValue.text(self.webhook),
            "slack_attempts": MetadataValue.int(self.attempts),
            "slack_elapsed_seconds": MetadataValue.float(round(self.elapsed_seconds, 3)),
            "slack_payload_sha256": MetadataValue.text(self.payload_sha256),
        }
        if self.http_status is not None:
            metadata["slack_http_status"] = MetadataValue.int(self.http_status)
        if self.preview_text is not None:
            metadata["slack_preview"] = MetadataValue.text(self.preview_text)
        return metadata


def payload_sha256(payload: Mapping[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- URL validation -----------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


SLACK_WEBHOOK_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")
_SLACK_WEBHOOK_PATH = re.compile(r"/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9_-]+/?")


def _url_problem(url: str) -> str | None:
    if not url.isascii() or any(ch.isspace() or not ch.isprintable() for ch in url):
        return "it contains spaces, control or non-ASCII characters"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return "it cannot be parsed as a URL"
    if parts.scheme.lower() not in ("https", "http"):
        return "it must start with https://"
    if not parts.hostname:
        return "it has no host name"
    if parts.scheme.lower() == "http" and not _is_loopback(parts.hostname):
        return "it must use https:// (plain http:// is accepted only for 127.0.0.1 or localhost)"
    if parts.username or parts.password:
        return "it must not contain a user name or password"
    if not parts.path.strip("/"):
        return "its path, the secret part of the webhook, is missing"
    if parts.hostname.lower() in SLACK_WEBHOOK_HOSTS and not _SLACK_WEBHOOK_PATH.fullmatch(parts.path):
        if parts.path.startswith(("/triggers/", "/workflows/")):
            return "it is a Workflow Builder webhook, which cannot post Block Kit messages"
        return "it is incomplete: a Slack webhook's path is /services/T…/B…/ followed by its secret"
    return None


def validate_webhook_url(url: str | None, *, variable: str = WEBHOOK_URL_VAR) -> str | None:
    """The URL stripped of surrounding blanks, or None when unset or blank (preview mode).

    A malformed URL raises ``SlackConfigError`` naming ``variable``; the value is never quoted,
    not even masked, since a malformed value may not have its secret at the end."""
    if isinstance(url, EnvVar):
        url = url.get_value()
    url = (url or "").strip()
    if not url:
        return None
    problem = _url_problem(url)
    if problem:
        raise SlackConfigError(
            f"{variable} is not a usable Slack webhook URL: {problem}. Copy it again from Slack "
            "(Apps → Incoming Webhooks); it looks like https://hooks.slack.com/services/T…/B…/…"
        )
    return url


def webhook_fingerprint(url: str | None) -> str | None:
    """A short hash that tells two webhooks apart without revealing either (None: no webhook).
    The webhook's secret part has far too much entropy to be guessed back from it."""
    if not url:
        return None
    return hashlib.sha256(f"heliox-webhook:{url.strip()}".encode()).hexdigest()[:16]


def webhook_url_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The validated ``SLACK_WEBHOOK_URL`` of the environment, None when unset."""
    return validate_webhook_url((os.environ if env is None else env).get(WEBHOOK_URL_VAR))


def enabled_line(url: str) -> str:
    """The start-up line the spec tells operators to grep for."""
    return f"Slack notifications enabled (webhook {mask_webhook_url(url)})"


# --- what slack-sdk logs ------------------------------------------------------------------------

_ANY_URL = re.compile(r"https?://[^\s'\"<>|]+")


class _MaskUrls(logging.Filter):
    """slack-sdk puts the request URL in some of its log lines; mask any URL before they leave."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _ANY_URL.sub(self._mask, record.getMessage())
        record.args = ()
        return True

    @staticmethod
    def _mask(match: re.Match[str]) -> str:
        url = match.group(0)
        trailing = url[len(url.rstrip(".,;:)]")) :]  # sentence punctuation, not part of the URL
        return mask_webhook_url(url[: len(url) - len(trailing)]) + trailing


# WebhookClient logs through this logger. Its level is set explicitly because the client decides
# whether to build its DEBUG lines (URL, body and headers included) from ``logger.level`` alone.
SLACK_SDK_LOGGER = logging.getLogger("heliox_orchestration.slack_sdk")
SLACK_SDK_LOGGER.setLevel(logging.WARNING)
SLACK_SDK_LOGGER.addFilter(_MaskUrls())


# --- Retry-After --------------------------------------------------------------------------------


def retry_after_seconds(headers: Mapping[str, Any], now: dt.datetime | None = None) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date); None when absent or unreadable."""
    values = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    raw = (values[0] if isinstance(values, list) else values or "").strip()
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max((when - (now or dt.datetime.now(dt.UTC))).total_seconds(), 0.0)


# --- the resource -------------------------------------------------------------------------------


class SlackWebhook(ConfigurableResource):
    """Posts Heliox messages to a Slack Incoming Webhook; preview mode without a URL.

    Wire ``webhook_url`` through ``EnvVar("SLACK_WEBHOOK_URL")`` so the URL never enters run
    config. The other fields keep the defaults of the spec in production; tests shorten them.
    """

    webhook_url: str | None = Field(
        default=None, description="Incoming Webhook URL (a secret: use EnvVar). Unset: preview mode."
    )
    timeout_seconds: int = Field(default=10, ge=1, description="Timeout of each HTTP request.")
    max_retries: int = Field(default=3, ge=0, le=10, description="Retries after the first attempt.")
    backoff_seconds: float = Field(default=0.5, ge=0, description="First retry delay; doubles each retry.")
    max_retry_after_seconds: float = Field(
        default=60, ge=0, description="Longest Retry-After (HTTP 429) waited for; longer fails the send."
    )
    min_interval_seconds: float = Field(
        default=1.0, ge=0, description="Least time between two messages to the same webhook."
    )

    def resolved_url(self) -> str | None:
        """The validated webhook URL, or None in preview mode. Raises ``SlackConfigError``."""
        return validate_webhook_url(self.webhook_url)

    @property
    def masked_url(self) -> str:
        return mask_webhook_url(self.resolved_url())

    def fingerprint(self) -> str | None:
        """``webhook_fingerprint`` of the URL; None in preview mode."""
        return webhook_fingerprint(self.resolved_url())

    def setup_for_execution(self, context: InitResourceContext) -> None:
        url = self.resolved_url()
        (context.log or get_dagster_logger()).info(enabled_line(url) if url else PREVIEW_LINE)

    def send(self, message: SlackPostable, on_retry: Callable[[int], None] | None = None) -> SlackSendResult:
        """Post ``message`` (or preview it). Raises ``SlackDeliveryError`` when it is not delivered.
        ``on_retry(n)`` is called before the n-th retry is made (it must not raise)."""
        payload = message.to_payload()
        digest = payload_sha256(payload)
        url = self.resolved_url()
        log = get_dagster_logger("slack")
        if url is None:
            text = message.to_plain_text()
            log.info(f"Slack preview mode ({WEBHOOK_URL_VAR} is not set); not sent:\n{text}")
            return SlackSendResult(
                status="previewed",
                attempts=0,
                http_status=None,
                elapsed_seconds=0.0,
                payload_sha256=digest,
                webhook=mask_webhook_url(None),
                preview_text=text,
            )
        # Imported here: slack-sdk loads when a message is sent, not with the definitions.
        from heliox_orchestration.resources.slack_transport import post

        return post(self, url, payload, digest, log, on_retry)
