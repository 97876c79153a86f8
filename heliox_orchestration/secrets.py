"""Showing secrets safely: only the last characters of a webhook URL or a token ever appear."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

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
