"""Showing secrets safely: only the last characters of a webhook URL ever appear."""

from __future__ import annotations

from urllib.parse import urlsplit

VISIBLE_CHARS = 4


def mask_webhook_url(url: str | None) -> str:
    """``https://hooks.slack.com/services/****...wxyz``: scheme and host, then the last 4 chars."""
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
    tail = url[-VISIBLE_CHARS:] if len(url) > 3 * VISIBLE_CHARS else ""
    return f"{prefix}{first_segment}/****...{tail}"
