"""Slack's Incoming Webhook as a Dagster resource, on slack-sdk's ``WebhookClient``
(``slack_transport``; what both share is in ``slack_types``).

* 10-second timeout; up to 3 retries with exponential backoff for connection errors, read
  timeouts, HTTP 5xx and 429 (after ``Retry-After``), through a slack-sdk retry handler.
* Slack's permanent refusals (``invalid_payload``, ``channel_not_found``, ...) raise at once with
  what to fix. ``WebhookClient.send`` returns error responses instead of raising; we check them.
* Slack allows about one message per second per webhook. Heliox sends a few messages an hour;
  messages sent in a row by one process are spaced a second apart, and a 429 from sends of
  separate runs is retried after its ``Retry-After``.
* The URL is a secret: only ``mask_webhook_url`` of it is ever shown, in logs and exceptions.
* No URL: preview mode. Nothing is sent; the message is logged and returned as readable text.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from dagster import ConfigurableResource, EnvVar, InitResourceContext, get_dagster_logger
from pydantic import Field

from heliox_orchestration.resources.slack_transport import post
from heliox_orchestration.resources.slack_types import (
    WEBHOOK_URL_VAR,
    DeliveryPolicy,
    SlackConfigError,
    SlackDeliveryError,
    SlackSendResult,
)
from heliox_orchestration.secrets import mask_webhook_url

# SlackDeliveryError and SlackSendResult are what ``SlackWebhook.send`` raises and returns.
__all__ = [
    "PREVIEW_LINE",
    "WEBHOOK_URL_VAR",
    "SlackConfigError",
    "SlackDeliveryError",
    "SlackPostable",
    "SlackRoutes",
    "SlackSendResult",
    "SlackWebhook",
    "enabled_line",
    "payload_sha256",
    "validate_webhook_url",
    "webhook_fingerprint",
    "webhook_url_from_env",
]

PREVIEW_LINE = f"Slack notifications disabled (preview mode): {WEBHOOK_URL_VAR} is not set"
# The lines announced outside a run (sensor ticks) by this process.
_ANNOUNCED: set[str] = set()
_ANNOUNCED_LOCK = threading.Lock()


class SlackPostable(Protocol):
    """What the resource sends: ``heliox_orchestration.alerts.messages.SlackMessage``."""

    def to_payload(self) -> dict[str, Any]: ...

    def to_plain_text(self) -> str: ...


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


# --- the resource -------------------------------------------------------------------------------


class SlackWebhook(ConfigurableResource):
    """Posts Heliox messages to a Slack Incoming Webhook; preview mode without a URL.

    Wire ``webhook_url`` through ``EnvVar("SLACK_WEBHOOK_URL")`` so the URL never enters run
    config. The other fields keep the defaults of the spec in production; tests shorten them.
    """

    webhook_url: str | None = Field(
        default=None, description="Incoming Webhook URL (a secret: use EnvVar). Unset: preview mode."
    )
    variable: str = Field(
        default=WEBHOOK_URL_VAR, description="The environment variable the URL comes from (in messages)."
    )
    timeout_seconds: int = Field(default=10, ge=1, description="Timeout of each HTTP request.")
    max_retries: int = Field(default=3, ge=0, le=10, description="Retries after the first attempt.")
    backoff_seconds: float = Field(default=0.5, ge=0, description="First retry delay; doubles each retry.")
    max_retry_after_seconds: float = Field(
        default=60, ge=0, description="Longest Retry-After (HTTP 429) waited for; longer fails the send."
    )
    min_interval_seconds: float = Field(
        default=1.0, ge=0, description="Least time between two messages to one webhook from one process."
    )

    def resolved_url(self) -> str | None:
        """The validated webhook URL, or None in preview mode. Raises ``SlackConfigError``."""
        return validate_webhook_url(self.webhook_url, variable=self.variable)

    @property
    def masked_url(self) -> str:
        return mask_webhook_url(self.resolved_url())

    def fingerprint(self) -> str | None:
        """``webhook_fingerprint`` of the URL; None in preview mode."""
        return webhook_fingerprint(self.resolved_url())

    def setup_for_execution(self, context: InitResourceContext) -> None:
        url = self.resolved_url()
        line = enabled_line(url) if url else PREVIEW_LINE
        if context.run is not None:  # a run: its own log says so, once
            (context.log or get_dagster_logger()).info(line)
            return
        # A sensor tick, every few seconds in the same process: the terminal hears it once.
        with _ANNOUNCED_LOCK:
            if line in _ANNOUNCED:
                return
            _ANNOUNCED.add(line)
        get_dagster_logger().info(line)

    def send(self, message: SlackPostable, on_retry: Callable[[int], None] | None = None) -> SlackSendResult:
        """Post ``message`` (or preview it). Raises ``SlackDeliveryError`` when it is not delivered.
        ``on_retry(n)`` is called before the n-th retry is made (it must not raise)."""
        payload = message.to_payload()
        digest = payload_sha256(payload)
        url = self.resolved_url()
        log = get_dagster_logger("slack")
        if url is None:
            text = message.to_plain_text()
            log.info(f"Slack preview mode ({self.variable} is not set); not sent:\n{text}")
            return SlackSendResult(
                status="previewed",
                attempts=0,
                http_status=None,
                elapsed_seconds=0.0,
                payload_sha256=digest,
                webhook=mask_webhook_url(None),
                preview_text=text,
            )
        policy = DeliveryPolicy(
            timeout_seconds=self.timeout_seconds,
            max_retries=self.max_retries,
            backoff_seconds=self.backoff_seconds,
            max_retry_after_seconds=self.max_retry_after_seconds,
            min_interval_seconds=self.min_interval_seconds,
            variable=self.variable,
        )
        return post(policy, url, payload, digest, log, on_retry)


class SlackRoutes(SlackWebhook):
    """``SLACK_WEBHOOK_URL`` (``webhook_url``) plus the other webhooks alerts are routed to: each
    alert kind's ``SLACK_WEBHOOK_URL_<KIND>`` and each team's variable of the routing file.

    ``webhooks`` maps a variable's *name* to ``EnvVar(name)`` (only for variables that are set),
    so no URL enters run config or Dagster's storage; the delivery settings are shared."""

    webhooks: dict[str, str] = Field(
        default_factory=dict, description="Variable name -> its webhook URL (secrets: use EnvVar)."
    )

    def route(self, variables: Sequence[str], *, fallback: bool = True) -> SlackWebhook:
        """The webhook of the first of ``variables`` that is set; else ``SLACK_WEBHOOK_URL`` (or
        preview mode), or with ``fallback=False`` the first variable's, unset (preview mode). A
        ``SLACK_WEBHOOK_URL`` in ``variables`` stands for ``webhook_url``."""
        for variable in variables:
            if variable == WEBHOOK_URL_VAR:
                break
            url = self.webhooks.get(variable)
            if url is not None and str(url).strip():
                return self._with(url, variable)
        if not fallback and variables:
            return self._with(None, variables[0])
        return self._with(self.webhook_url, WEBHOOK_URL_VAR)

    def _with(self, url: str | None, variable: str) -> SlackWebhook:
        return SlackWebhook(
            webhook_url=url,
            variable=variable,
            timeout_seconds=self.timeout_seconds,
            max_retries=self.max_retries,
            backoff_seconds=self.backoff_seconds,
            max_retry_after_seconds=self.max_retry_after_seconds,
            min_interval_seconds=self.min_interval_seconds,
        )
