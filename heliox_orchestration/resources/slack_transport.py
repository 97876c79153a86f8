"""The HTTP side of the ``SlackWebhook`` resource: slack-sdk's ``WebhookClient`` with one retry
handler, and the spacing of messages sent in a row by one process.

slack-sdk's built-in retry handlers miss what a webhook post needs: ``ConnectionErrorRetryHandler``
does not retry a read timeout (urllib raises it as a bare ``TimeoutError``),
``ServerErrorRetryHandler`` retries only HTTP 500 and 503, and ``RateLimitErrorRetryHandler``
reads ``Retry-After`` with ``int()`` (no HTTP date) and waits however long it says. So one
handler, ``_TransientFailures``, implements slack-sdk's public ``RetryHandler`` interface
(``can_retry``, ``prepare_for_next_attempt``) for all three, with slack-sdk's
``BackoffRetryIntervalCalculator``.

Imported when a message is sent: slack-sdk is not needed to load the definitions.
"""

from __future__ import annotations

import hashlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.client import IncompleteRead
from typing import Any
from urllib.error import URLError

from slack_sdk.http_retry import (
    BackoffRetryIntervalCalculator,
    HttpRequest,
    HttpResponse,
    Jitter,
    RetryHandler,
    RetryState,
)
from slack_sdk.webhook import WebhookClient, WebhookResponse

from heliox_orchestration.resources.slack_types import (
    SLACK_ERROR_HELP,
    SLACK_SDK_LOGGER,
    WEBHOOK_URL_VAR,
    DeliveryPolicy,
    SlackDeliveryError,
    SlackSendResult,
    retry_after_seconds,
)
from heliox_orchestration.secrets import mask_webhook_url, redact_webhook_url

# --- spacing ------------------------------------------------------------------------------------
# Slack accepts about one message per second per webhook. Each alert run sends one message, but
# the run-failure sensor posts one notice per failed run of a tick, back to back: those are
# spaced here. Separate run processes are not; the rare 429 they could cause is retried after its
# Retry-After (docs/operations.md, "Slack's rate limit").


class _Turns:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next_send_at = 0.0


_turns: dict[str, _Turns] = {}
_turns_lock = threading.Lock()


@contextmanager
def _spaced(url: str, min_interval: float) -> Iterator[None]:
    """Sends to one webhook from this process take turns, each starting ``min_interval`` after
    the previous one ended."""
    key = hashlib.sha256(url.encode()).hexdigest()
    with _turns_lock:
        turns = _turns.setdefault(key, _Turns())
    with turns.lock:
        wait = turns.next_send_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            yield
        finally:
            turns.next_send_at = time.monotonic() + min_interval


# --- retries ------------------------------------------------------------------------------------

# RemoteDisconnected and ConnectionResetError are ConnectionErrors; a read timeout is a TimeoutError.
_NETWORK_ERRORS = (URLError, ConnectionError, IncompleteRead, TimeoutError)


def _first_line(text: str, limit: int = 300) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line[:limit]


def _describe_error(error: BaseException, url: str) -> str:
    reason = error.reason if isinstance(error, URLError) else error
    return redact_webhook_url(_first_line(f"{type(error).__name__}: {reason}"), url)


def _slack_error_code(body: str, url: str) -> str:
    return redact_webhook_url(_first_line(body, 100), url) or "(empty body)"


class _ProportionalJitter(Jitter):
    """Up to 25% on top of each backoff. slack-sdk's ``RandomJitter`` adds up to a whole second,
    which would triple the first 0.5 s wait."""

    def recalculate(self, duration: float) -> float:
        return duration * (1 + random.random() / 4)


class _TransientFailures(RetryHandler):
    """Retries what a later attempt may fix: connection errors and read timeouts, every HTTP 5xx,
    and 429 after its ``Retry-After`` unless that is longer than the policy waits. Logs each
    retry (the only line about it: slack-sdk's own is dropped) and counts it, since slack-sdk
    keeps its count to itself."""

    def __init__(
        self,
        policy: DeliveryPolicy,
        url: str,
        log: logging.Logger,
        on_retry: Callable[[int], None] | None,
    ) -> None:
        super().__init__(
            max_retry_count=policy.max_retries,
            interval_calculator=BackoffRetryIntervalCalculator(policy.backoff_seconds, _ProportionalJitter()),
        )
        self.max_retry_after = policy.max_retry_after_seconds
        self.url = url
        self.log = log
        self.on_retry = on_retry
        self.retries = 0

    def can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if state.current_attempt >= self.max_retry_count:
            return False
        if response is not None:
            if response.status_code == 429:
                wait = retry_after_seconds(response.headers)
                return wait is None or wait <= self.max_retry_after
            return 500 <= response.status_code <= 599
        if isinstance(error, URLError) and isinstance(error.reason, ssl.SSLCertVerificationError):
            return False  # a certificate that fails verification will fail again
        return isinstance(error, _NETWORK_ERRORS)

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        wait = None
        if response is not None and response.status_code == 429:
            wait = retry_after_seconds(response.headers)
        if wait is None:
            wait = self.interval_calculator.calculate_sleep_duration(state.current_attempt)
        self._report(wait, response, error)
        state.next_attempt_requested = True
        time.sleep(wait)
        state.increment_current_attempt()

    def _report(self, delay: float, response: HttpResponse | None, error: Exception | None) -> None:
        self.retries += 1
        if response is not None:
            body = (response.data or b"").decode("utf-8", "replace")
            reason = f"HTTP {response.status_code} {_slack_error_code(body, self.url)}"
        else:
            reason = _describe_error(error, self.url) if error else "unknown error"
        self.log.warning(
            f"Slack webhook {mask_webhook_url(self.url)}: attempt {self.retries} failed ({reason}); "
            f"retrying in {delay:.1f} s"
        )
        if self.on_retry is not None:
            self.on_retry(self.retries)


# --- sending ------------------------------------------------------------------------------------


def post(
    policy: DeliveryPolicy,
    url: str,
    payload: dict[str, Any],
    digest: str,
    log: logging.Logger,
    on_retry: Callable[[int], None] | None = None,
) -> SlackSendResult:
    """POST ``payload`` to ``url`` with the policy's timeout, retries and spacing. Raises
    ``SlackDeliveryError`` when Slack refuses it or cannot be reached."""
    masked = mask_webhook_url(url)
    retries = _TransientFailures(policy, url, log, on_retry)
    client = WebhookClient(
        url,
        timeout=policy.timeout_seconds,
        logger=SLACK_SDK_LOGGER,
        retry_handlers=[retries],
    )
    response: WebhookResponse | None = None
    failure = ""
    with _spaced(url, policy.min_interval_seconds):
        started = time.monotonic()
        try:
            response = client.send_dict(payload)
        except Exception as exc:  # anything the client raises, reworded without the URL
            failure = _describe_error(exc, url)
        elapsed = time.monotonic() - started
    # Raised out here, not in the except block, so the original exception (which may quote
    # the URL) is not chained to ours as __context__.
    tries = retries.retries + 1
    if response is None:
        raise SlackDeliveryError(
            f"Slack webhook {masked} could not be reached after {_times(tries)} ({elapsed:.1f} s): {failure}",
            attempts=tries,
            retryable=True,
            payload_sha256=digest,
        )
    status, body = response.status_code, (response.body or "").strip()
    if 200 <= status <= 299 and body == "ok":
        log.info(f"Slack message sent to {masked} (HTTP {status}, {_times(tries)}, {elapsed:.2f} s)")
        return SlackSendResult(
            status="sent",
            attempts=tries,
            http_status=status,
            elapsed_seconds=elapsed,
            payload_sha256=digest,
            webhook=masked,
        )
    wait = retry_after_seconds(response.headers or {}) if status == 429 else None
    too_long = wait is not None and wait > policy.max_retry_after_seconds
    refusal = _refusal(masked, status, _slack_error_code(body, url), tries, digest, too_long, policy.variable)
    raise refusal


def _times(attempts: int) -> str:
    return f"{attempts} attempt{'s' if attempts != 1 else ''}"


def _refusal(
    masked: str,
    status: int,
    code: str,
    attempts: int,
    digest: str,
    wait_too_long: bool,
    variable: str = WEBHOOK_URL_VAR,
) -> SlackDeliveryError:
    # Slack's error strings for a refusal are permanent whatever the HTTP status they came with.
    retryable = (status == 429 or status >= 500) and code not in SLACK_ERROR_HELP
    if wait_too_long:
        why = "rate limited: Slack's Retry-After is longer than Heliox waits (max_retry_after_seconds)"
    elif retryable:
        why = f"still failing after {_times(attempts)}; Slack is degraded or rate limiting this webhook"
    elif code in SLACK_ERROR_HELP:
        why = SLACK_ERROR_HELP[code]
    elif 200 <= status <= 299:
        why = "unexpected answer: a Slack webhook answers 'ok'; check that the URL is a Slack webhook"
    else:
        why = f"check {WEBHOOK_URL_VAR}; Slack's error string says what it refused"
    if variable != WEBHOOK_URL_VAR:
        why = why.replace(WEBHOOK_URL_VAR, variable)
    return SlackDeliveryError(
        f"Slack refused the message to {masked} (HTTP {status} {code}): {why}",
        attempts=attempts,
        http_status=status,
        slack_error=code,
        retryable=retryable,
        payload_sha256=digest,
    )
