"""Showing secrets safely: only the last characters of a webhook URL or a token ever appear,
and no database password in any form SQLAlchemy or libpq accept."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, unquote_plus, urlsplit

VISIBLE_CHARS = 4


def mask_webhook_url(url: str | None) -> str:
    """``https://hooks.slack.com/services/****...wxyz``: scheme and host, then the last 4 chars."""
    url = (url or "").strip()
    if not url:
        return "(not set)"
    try:
        parts = urlsplit(url)
        prefix = f"{parts.scheme}://{parts.hostname}" if parts.scheme and parts.hostname else ""
    except ValueError:
        prefix = ""
    first_segment = ""
    if prefix and parts.path.startswith("/services/"):
        first_segment = "/services"
    # The tail is shown only while at least 12 characters of the secret part stay hidden.
    hidden = url.split("://", 1)[-1].partition("/")[2] if prefix else url
    tail = url[-VISIBLE_CHARS:] if len(hidden) - len(first_segment) >= 4 * VISIBLE_CHARS else ""
    return f"{prefix}{first_segment}/****...{tail}"


def redact_webhook_url(text: str, url: str | None) -> str:
    """``text`` with the webhook URL masked, and any piece of its path (as an error message
    might quote it) replaced by ``****``."""
    url = (url or "").strip()
    if not url:
        return text
    text = text.replace(url, mask_webhook_url(url))
    try:
        parts = urlsplit(url)
    except ValueError:
        return text
    pieces = {parts.path + (f"?{parts.query}" if parts.query else ""), parts.path, parts.query}
    pieces.update(segment for segment in parts.path.split("/") if segment != "services")
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) >= 6:
            text = text.replace(piece, "****")
    return text


# --- database URLs --------------------------------------------------------------------------------

MASK = "***"
# Query parameters whose value is a credential (libpq's and the common drivers' names).
_SECRET_PARAMS = ("password", "passwd", "pwd", "sslpassword", "secret", "token", "api_key", "apikey")
_AUTHORITY_END = re.compile(r"[/?]")
# ``password=...`` inside a libpq keyword/value string (a value ends at a blank or a quote's end).
_KEYWORD_SECRET = re.compile(r"(?i)\b(password|passwd|pwd|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]+)")


def _is_secret_param(name: str) -> bool:
    lowered = unquote(name).strip().lower()
    return any(word in lowered for word in _SECRET_PARAMS)


def _mask_query(query: str) -> str:
    parts = []
    for pair in query.split("&"):
        name, sep, value = pair.partition("=")
        if sep and _is_secret_param(name):
            value = MASK
        elif sep:
            # A libpq keyword/value string inside a parameter (e.g. dsn=...): mask its password.
            decoded = unquote_plus(value)
            if _KEYWORD_SECRET.search(decoded):
                value = _KEYWORD_SECRET.sub(lambda m: f"{m.group(1)}={MASK}", decoded)
        parts.append(f"{name}{sep}{value}")
    return "&".join(parts)


def _split_userinfo(rest: str) -> tuple[str, str]:
    """(userinfo, host and the rest) of what follows ``scheme://``. The userinfo ends at the
    LAST ``@`` before the host: a password with an unescaped ``@`` or ``/`` is still userinfo."""
    at = rest.rfind("@")
    while at != -1:
        tail = rest[at + 1 :]
        host = _AUTHORITY_END.split(tail, maxsplit=1)[0]
        if host and "@" not in host:
            return rest[:at], tail
        at = rest.rfind("@", 0, at)
    return "", rest


def mask_database_url(url: str | None) -> str:
    """A database URL safe to show: the password of the user part (whatever characters it holds)
    and every credential query parameter replaced by ``***``. Never raises."""
    url = (url or "").strip()
    if not url:
        return "(not set)"
    scheme, sep, rest = url.partition("://")
    if not sep:
        # Not a URL: a libpq keyword/value string or garbage; show only what cannot be secret.
        return _KEYWORD_SECRET.sub(lambda m: f"{m.group(1)}={MASK}", url) if "=" in url else MASK
    userinfo, tail = _split_userinfo(rest)
    if userinfo:
        user, has_password, _ = userinfo.partition(":")
        userinfo = f"{user}:{MASK}@" if has_password else f"{user}@"
    location, qmark, query = tail.partition("?")
    return f"{scheme}://{userinfo}{location}{qmark}{_mask_query(query) if qmark else ''}"


def database_url_secrets(url: str | None) -> list[str]:
    """The credential values a database URL holds (raw and percent-decoded), longest first."""
    url = (url or "").strip()
    _, sep, rest = url.partition("://")
    values: set[str] = set()
    if sep:
        userinfo, tail = _split_userinfo(rest)
        _, has_password, password = userinfo.partition(":")
        if has_password and password:
            values.add(password)
        for pair in tail.partition("?")[2].split("&"):
            name, eq, value = pair.partition("=")
            if eq and value and _is_secret_param(name):
                values.add(value)
    for match in _KEYWORD_SECRET.finditer(unquote_plus(url)):
        values.add(match.group(2).strip("'"))
    values |= {unquote_plus(v) for v in values}
    # A driver may quote a piece: a password with an unescaped '@' ends up partly in the host.
    values |= {piece for v in values for piece in re.split(r"[@/:?]", v) if len(piece) >= 3}
    return sorted((v for v in values if v), key=len, reverse=True)


def redact_database_url(text: str, url: str | None) -> str:
    """``text`` with the URL masked and any credential it holds replaced by ``***`` (as a
    driver's error message might quote it)."""
    url = (url or "").strip()
    if not url:
        return text
    text = text.replace(url, mask_database_url(url))
    for secret in database_url_secrets(url):
        if len(secret) >= 3:  # a 1-2 character password would mask unrelated text; it is shown nowhere else
            text = text.replace(secret, MASK)
    return text


def mask_secret(value: str | None, *, tail: bool = True) -> str:
    """A token as ``****...wxyz``: the last 4 characters only while at least 12 stay hidden
    (never with ``tail=False``, for passwords), else ``****``; ``(not set)`` when empty."""
    value = (value or "").strip()
    if not value:
        return "(not set)"
    return f"****...{value[-VISIBLE_CHARS:]}" if tail and len(value) >= 4 * VISIBLE_CHARS else "****"


def redact_secrets(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every occurrence of each secret (longest first) replaced by ``****``.
    Secrets shorter than 4 characters are replaced too: an error line may lose a few
    characters, a password never shows."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "****")
    return text
