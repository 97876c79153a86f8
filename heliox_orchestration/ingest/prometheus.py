"""A small client for Prometheus' HTTP API: range queries and label values, nothing more.

* ``PROMETHEUS_URL`` plus either a bearer token (``PROMETHEUS_BEARER_TOKEN``) or basic auth
  (``PROMETHEUS_USERNAME`` / ``PROMETHEUS_PASSWORD``). The token and the password are secrets:
  they reach Dagster resources through ``EnvVar``, are shown only masked (``describe``), and
  every error message is scrubbed of them (and of the encoded basic-auth header).
* Each request has a connect and a read timeout, and is passed Prometheus' own ``timeout``
  parameter so the server gives up too. Connection errors, timeouts, HTTP 5xx and 429 are
  retried with a doubling pause, ``attempts`` times in all; so one call takes at most
  ``attempts x (connect + read timeout) + the pauses`` (by default 3 x 65 s + 3 s).
* Failures raise ``PrometheusError`` with one line saying what happened and what to do:
  unreachable, credentials refused (401/403), a query Prometheus rejects (its own message),
  too many points or samples for one query (make the chunks smaller), a server error.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from heliox_orchestration.secrets import mask_secret, redact_secrets

URL_VAR = "PROMETHEUS_URL"
BEARER_TOKEN_VAR = "PROMETHEUS_BEARER_TOKEN"
USERNAME_VAR = "PROMETHEUS_USERNAME"
PASSWORD_VAR = "PROMETHEUS_PASSWORD"

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF_SECONDS = 1.0
MAX_ERROR_CHARS = 300

_RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})
_CHUNK_ADVICE = "lower hours_per_query or resources_per_query in HELIOX_DCGM_MAPPING"


class PrometheusConfigError(ValueError):
    """The Prometheus settings are unusable; the message names the variable."""


class PrometheusError(RuntimeError):
    """A request failed; ``kind`` is one of unreachable, timeout, unauthorized, bad_query,
    too_much_data, server_error, bad_response. The message never holds a secret."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Series:
    """One series of a range query: its labels and its (timestamp in seconds, value) points."""

    labels: Mapping[str, str]
    values: Sequence[tuple[float, str]]


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


class PrometheusClient:
    """Prometheus' HTTP API at ``url``; see the module docstring for auth, timeouts and retries."""

    def __init__(
        self,
        url: str,
        *,
        bearer_token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
    ) -> None:
        self.url = validate_url(url)
        bearer_token, username, password = validate_credentials(bearer_token, username, password)
        if attempts < 1 or connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("attempts must be at least 1 and timeouts positive")
        self._bearer_token = bearer_token
        self._username = username
        self._password = password
        self.timeout = (connect_timeout, read_timeout)
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "heliox-orchestration"
        self._secrets: list[str] = []
        if bearer_token:
            self._session.headers["Authorization"] = f"Bearer {bearer_token}"
            self._secrets = [bearer_token]
        elif username and password:
            encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
            self._session.headers["Authorization"] = f"Basic {encoded}"
            self._secrets = [password, encoded]
        self._range_includes_start: bool | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], **options: Any) -> PrometheusClient:
        """A client from ``PROMETHEUS_*`` variables (the command line's way; Dagster resources
        receive the same values through ``EnvVar``)."""
        url = env.get(URL_VAR, "").strip()
        if not url:
            raise PrometheusConfigError(
                f"{URL_VAR} is not set; set it to your Prometheus, e.g. http://prometheus:9090."
            )
        return cls(
            url,
            bearer_token=env.get(BEARER_TOKEN_VAR),
            username=env.get(USERNAME_VAR),
            password=env.get(PASSWORD_VAR),
            **options,
        )

    def describe(self) -> str:
        """The URL and the kind of credentials, secrets masked."""
        if self._bearer_token:
            return f"{self.url} (bearer token {mask_secret(self._bearer_token)})"
        if self._username:
            password = mask_secret(self._password, tail=False)
            return f"{self.url} (basic auth as {self._username}, password {password})"
        return f"{self.url} (no authentication)"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- API calls -------------------------------------------------------------------------

    def query_range(self, query: str, start_ms: int, end_ms: int, step_seconds: int) -> list[Series]:
        """``/api/v1/query_range``: the matrix of ``query`` evaluated at ``start_ms``,
        ``start_ms + step``, ... up to ``end_ms`` (milliseconds since the epoch)."""
        data = self._call(
            "POST",
            "/api/v1/query_range",
            {
                "query": query,
                "start": _seconds(start_ms),
                "end": _seconds(end_ms),
                "step": str(step_seconds),
                "timeout": f"{self.timeout[1]:g}s",
            },
        )
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            raise PrometheusError(
                "bad_response", f"Prometheus at {self.url} answered a range query without a matrix."
            )
        try:
            return [
                Series({str(k): str(v) for k, v in r["metric"].items()}, r.get("values", []))
                for r in data["result"]
            ]
        except (KeyError, TypeError, AttributeError):
            raise PrometheusError(
                "bad_response", f"Prometheus at {self.url} answered a range query with a malformed result."
            ) from None

    def label_values(self, label: str, match: str, start_ms: int, end_ms: int) -> list[str]:
        """``/api/v1/label/<label>/values`` of the series ``match`` selects in the time range."""
        data = self._call(
            "GET",
            f"/api/v1/label/{label}/values",
            {"match[]": match, "start": _seconds(start_ms), "end": _seconds(end_ms)},
        )
        if not isinstance(data, list):
            raise PrometheusError(
                "bad_response", f"Prometheus at {self.url} answered label values without a list."
            )
        return sorted(str(v) for v in data if v)

    def range_includes_start(self) -> bool:
        """Whether a range selector ``[d]`` evaluated at ``t`` includes a sample at ``t - d``:
        yes up to Prometheus 2.x, no from 3.0 (left-open ranges). Read once from
        ``/api/v1/status/buildinfo``; a server without it is taken for a current one (3.x)."""
        if self._range_includes_start is None:
            try:
                info = self._call("GET", "/api/v1/status/buildinfo", {}, attempts=1)
                version = str(info.get("version", "")) if isinstance(info, dict) else ""
            except PrometheusError as exc:
                if exc.kind not in ("bad_query", "bad_response"):
                    raise
                version = ""
            major = re.match(r"v?(\d+)\.", version)
            self._range_includes_start = bool(major) and int(major.group(1)) < 3  # type: ignore[union-attr]
        return self._range_includes_start

    # --- transport -------------------------------------------------------------------------

    def _call(self, method: str, path: str, params: dict[str, str], attempts: int | None = None) -> Any:
        attempts = attempts or self.attempts
        failure = PrometheusError("unreachable", "")
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                time.sleep(self.backoff_seconds * 2 ** (attempt - 2))
            try:
                response = self._session.request(
                    method,
                    self.url + path,
                    params=params if method == "GET" else None,
                    data=params if method == "POST" else None,
                    timeout=self.timeout,
                )
            except requests.Timeout:
                failure = self._error(
                    "timeout",
                    f"did not answer within {self.timeout[1]:g} s ({attempts} attempts); "
                    f"check the server's load, or {_CHUNK_ADVICE}",
                )
                continue
            except requests.ConnectionError as exc:
                failure = self._error("unreachable", f"is unreachable ({attempts} attempts): {_cause(exc)}")
                continue
            except requests.RequestException as exc:
                raise self._error("unreachable", f"could not be asked: {_cause(exc)}") from None
            if response.status_code in _RETRIED_STATUS:
                failure = self._status_error(response, f" ({attempts} attempts)")
                continue
            if response.status_code >= 400:
                raise self._status_error(response, "")
            try:
                body = response.json()
            except ValueError:
                raise self._error(
                    "bad_response",
                    f"answered HTTP {response.status_code} without JSON; is {URL_VAR} a Prometheus?",
                ) from None
            if not isinstance(body, dict) or body.get("status") != "success":
                raise self._error("bad_response", f"answered without success: {_one_line(str(body))}")
            return body.get("data")
        raise failure

    def _status_error(self, response: requests.Response, attempts: str) -> PrometheusError:
        status = response.status_code
        if status in (401, 403):
            credentials = (
                f"check {BEARER_TOKEN_VAR}"
                if self._bearer_token
                else f"check {USERNAME_VAR} and {PASSWORD_VAR}"
                if self._username
                else f"set {BEARER_TOKEN_VAR} or {USERNAME_VAR}/{PASSWORD_VAR}"
            )
            return self._error("unauthorized", f"refused the credentials (HTTP {status}): {credentials}")
        try:
            body = response.json()
            error_type, error = str(body.get("errorType", "")), str(body.get("error", ""))
        except (ValueError, AttributeError):
            error_type, error = "", response.text
        if "exceeded maximum resolution" in error or "too many samples" in error:
            return self._error(
                "too_much_data", f"refused a query as too large ({_one_line(error)}); {_CHUNK_ADVICE}"
            )
        if status in (400, 422) and error_type in ("bad_data", "execution"):
            return self._error("bad_query", f"rejected the query ({error_type}): {_one_line(error)}")
        if status >= 500 or status == 429:
            kind = "timeout" if error_type == "timeout" else "server_error"
            return self._error(
                kind, f"answered HTTP {status}{attempts}: {_one_line(error) or response.reason}"
            )
        return self._error("bad_query", f"answered HTTP {status}: {_one_line(error) or response.reason}")

    def _error(self, kind: str, what: str) -> PrometheusError:
        return PrometheusError(kind, redact_secrets(f"Prometheus at {self.url} {what}", self._secrets))


def validate_credentials(
    bearer_token: str | None, username: str | None, password: str | None
) -> tuple[str | None, str | None, str | None]:
    """The credentials, blanks as None; refused when both kinds, or half of basic auth, are set."""
    bearer_token = (bearer_token or "").strip() or None
    username = (username or "").strip() or None
    password = password or None
    if bearer_token and (username or password):
        raise PrometheusConfigError(
            f"Set either {BEARER_TOKEN_VAR} or {USERNAME_VAR}/{PASSWORD_VAR}, not both."
        )
    if bool(username) != bool(password):
        missing = PASSWORD_VAR if username else USERNAME_VAR
        raise PrometheusConfigError(
            f"Basic auth needs both {USERNAME_VAR} and {PASSWORD_VAR}; {missing} is not set."
        )
    return bearer_token, username, password


def validate_url(url: str) -> str:
    """``url`` without a trailing slash; refused when it is not http(s) or carries credentials."""
    url = (url or "").strip().rstrip("/")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise PrometheusConfigError(
            f"{URL_VAR} is not a URL; expected e.g. http://prometheus:9090."
        ) from None
    if parts.username or parts.password:
        raise PrometheusConfigError(
            f"{URL_VAR} must not contain credentials; put them in {USERNAME_VAR} and {PASSWORD_VAR}."
        )
    if parts.scheme not in ("http", "https") or not host:
        raise PrometheusConfigError(
            f"{URL_VAR} must start with http:// or https://, e.g. http://prometheus:9090."
        )
    if parts.query or parts.fragment:
        raise PrometheusConfigError(f"{URL_VAR} must not have a query string or fragment.")
    return url


def _seconds(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


def _cause(exc: Exception) -> str:
    """The innermost reason of a requests error, e.g. 'Connection refused', on one line."""
    text = str(exc)
    reasons = re.findall(r"\] ([^'\"\]]+?)['\")]", text)
    return _one_line(reasons[-1] if reasons else text)
