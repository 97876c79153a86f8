"""The HTTP side of the ``SlackWebhook`` resource: slack-sdk's ``WebhookClient`` with Heliox's
retry handlers and pacing.

Imported when a message is sent, not when the definitions load (slack-sdk's import costs about
a tenth of Dagster's; docs/performance.md, goal 6).
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
from http.client import IncompleteRead, RemoteDisconnected
from typing import Any
from urllib.error import URLError

from slack_sdk.http_retry import (
    BackoffRetryIntervalCalculator,
    ConnectionErrorRetryHandler,
    HttpRequest,
    HttpResponse,
    Jitter,
    RateLimitErrorRetryHandler,
    RetryHandler,
    RetryState,
)
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler
from slack_sdk.webhook import WebhookClient, WebhookResponse

from heliox_orchestration.resources.slack import (
    SLACK_ERROR_HELP,
    SLACK_SDK_LOGGER,
    WEBHOOK_URL_VAR,
    SlackDeliveryError,
    SlackSendResult,
    SlackWebhook,
    retry_after_seconds,
)
from heliox_orchestration.secrets import mask_webhook_url, redact_webhook_url

# --- pacing -------------------------------------------------------------------------------------


class _Pacer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next_send_at = 0.0


_pacers: dict[str, _Pacer] = {}
_pacers_lock = threading.Lock()


@contextmanager
def _paced(url: str, min_interval: float) -> Iterator[None]:
    """Sends to one webhook take turns; each starts ``min_interval`` after the previous ended."""
    key = hashlib.sha256(url.encode()).hexdigest()
    with _pacers_lock:
        pacer = _pacers.setdefault(key, _Pacer())
    with pacer.lock:
        wait = pacer.next_send_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            yield
        finally:
            pacer.next_send_at = time.monotonic() + min_interval


# --- retries ------------------------------------------------------------------------------------


def _first_line(text: str, limit: int = 300) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line[:limit]


def _describe_error(error: BaseException, url: str) -> str:
    reason = error.reason if isinstance(error, URLError) else error
    return redact_webhook_url(_first_line(f"{type(error).__name__}: {reason}"), url)


def _slack_error_code(body: str, url: str) -> str:
    return redact_webhook_url(_first_line(body, 100), url) or "(empty body)"


class _Attempts:
    """Counts and logs the retries of one send (slack-sdk keeps its own count private)."""

    def __init__(self, url: str, log: logging.Logger, on_retry: Callable[[int], None] | None = None) -> None:
        self.url = url
        self.log = log
        self.retries = 0
        self.on_retry = on_retry

    def retrying(self, delay: float, response: HttpResponse | None, error: BaseException | None) -> None:
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


class _ProportionalJitter(Jitter):
    """Up to 25% on top of each backoff (slack-sdk's default adds up to a whole second)."""

    def recalculate(self, duration: float) -> float:
        return duration * (1 + random.random() / 4)


class _Logged(RetryHandler):
    """Reports each retry to ``_Attempts`` before sleeping."""

    def __init__(self, attempts: _Attempts, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.attempts = attempts

    def delay(self, state: RetryState, response: HttpResponse | None) -> float:
        return self.interval_calculator.calculate_sleep_duration(state.current_attempt)

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        delay = self.delay(state, response)
        self.attempts.retrying(delay, response, error)
        state.next_attempt_requested = True
        time.sleep(delay)
        state.increment_current_attempt()


class _ConnectionErrors(_Logged, ConnectionErrorRetryHandler):
    """Connection errors, and read timeouts, which urllib raises as a bare ``TimeoutError``.
    A certificate that fails verification will fail again: not retried."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if isinstance(error, URLError) and isinstance(error.reason, ssl.SSLCertVerificationError):
            return False
        return super()._can_retry(state=state, request=request, response=response, error=error)


class _ServerErrors(_Logged, ServerErrorRetryHandler):
    """Every 5xx (slack-sdk's handler retries only 500 and 503)."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and 500 <= response.status_code <= 599


class _RateLimited(_Logged, RateLimitErrorRetryHandler):
    """429: waits ``Retry-After`` (parsed more leniently than slack-sdk's ``int()``); a wait
    longer than ``max_wait`` is not retried, so a run does not hang on a long ban."""

    def __init__(self, attempts: _Attempts, max_wait: float, **kwargs: Any) -> None:
        super().__init__(attempts, **kwargs)
        self.max_wait = max_wait

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        wait = retry_after_seconds(response.headers) if response else None
        return wait is None or wait <= self.max_wait

    def delay(self, state: RetryState, response: HttpResponse | None) -> float:
        wait = retry_after_seconds(response.headers) if response else None
        return super().delay(state, response) if wait is None else wait


# --- sending ------------------------------------------------------------------------------------


def _retry_handlers(slack: SlackWebhook, attempts: _Attempts) -> list[RetryHandler]:
    backoff = BackoffRetryIntervalCalculator(slack.backoff_seconds, _ProportionalJitter())
    common: dict[str, Any] = {"max_retry_count": slack.max_retries, "interval_calculator": backoff}
    network_errors: list[type[Exception]] = [
        URLError,
        ConnectionError,
        RemoteDisconnected,
        IncompleteRead,
        TimeoutError,
    ]
    return [
        _ConnectionErrors(attempts, error_types=network_errors, **common),
        _ServerErrors(attempts, **common),
        _RateLimited(attempts, slack.max_retry_after_seconds, **common),
    ]


def post(
    slack: SlackWebhook,
    url: str,
    payload: dict[str, Any],
    digest: str,
    log: logging.Logger,
    on_retry: Callable[[int], None] | None = None,
) -> SlackSendResult:
    """POST ``payload`` to ``url`` with ``slack``'s timeout, retries and pacing. Raises
    ``SlackDeliveryError`` when Slack refuses it or cannot be reached."""
    masked = mask_webhook_url(url)
    attempts = _Attempts(url, log, on_retry)
    client = WebhookClient(
        url,
        timeout=slack.timeout_seconds,
        logger=SLACK_SDK_LOGGER,
        retry_handlers=_retry_handlers(slack, attempts),
    )
    response: WebhookResponse | None = None
    failure = ""
    with _paced(url, slack.min_interval_seconds):
        started = time.monotonic()
        try:
            response = client.send_dict(payload)
        except Exception as exc:  # anything the client raises, reworded without the URL
            failure = _describe_error(exc, url)
        elapsed = time.monotonic() - started
    # Raised out here, not in the except block, so the original exception (which may quote
    # the URL) is not chained to ours as __context__.
    tries = attempts.retries + 1
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
    too_long = wait is not None and wait > slack.max_retry_after_seconds
    raise _refusal(masked, status, _slack_error_code(body, url), tries, digest, too_long)


def _times(attempts: int) -> str:
    return f"{attempts} attempt{'s' if attempts != 1 else ''}"


def _refusal(
    masked: str, status: int, code: str, attempts: int, digest: str, wait_too_long: bool
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
    return SlackDeliveryError(
        f"Slack refused the message to {masked} (HTTP {status} {code}): {why}",
        attempts=attempts,
        http_status=status,
        slack_error=code,
        retryable=retryable,
        payload_sha256=digest,
    )
