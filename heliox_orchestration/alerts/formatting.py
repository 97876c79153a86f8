"""Text building blocks of the Slack messages: money, percentages, escaping, truncation, sparklines.

Everything that comes from the database (model names, teams, resource ids) goes through
``escape`` before it reaches mrkdwn, so a workload named ``<!channel>`` cannot ping a channel.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import quote

ELLIPSIS = "…"
TENTH = Decimal("0.1")
SPARK_LEVELS = "▁▂▃▄▅▆▇█"
SPARK_GAP = "·"


def percent(value: Decimal) -> str:
    """``52.3%``: one decimal, half-up."""
    return f"{Decimal(value).quantize(TENTH, rounding=ROUND_HALF_UP)}%"


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn gives meaning to (links, mentions, entities)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)].rstrip() + ELLIPSIS


# A cut inside an entity (``&am``) or a link (``<https://x|lab``) would show debris or break
# the link syntax; the cut backs off to before it.
_OPEN_ENTITY = re.compile(r"&[a-z]*$")
_OPEN_LINK = re.compile(r"<[^<>]*$")


def truncate_mrkdwn(text: str, limit: int) -> str:
    """Like ``truncate``, for escaped mrkdwn: never ends inside an entity or a link."""
    if len(text) <= limit:
        return text
    head = text[: max(limit - 1, 0)]
    head = _OPEN_LINK.sub("", _OPEN_ENTITY.sub("", head))
    return head.rstrip() + ELLIPSIS


def label(text: str | None, limit: int = 100, *, missing: str = "Unattributed") -> str:
    """An untrusted name, shortened for display and escaped for mrkdwn."""
    return escape(truncate(text if text and text.strip() else missing, limit))


def link(url: str, text: str) -> str:
    """A mrkdwn link. ``text`` must already be escaped; the URL cannot close the link early."""
    safe_url = quote(url, safe=":/?#[]@!$&'()*+,;=%~-._")
    return f"<{escape(safe_url)}|{text}>"


def sparkline(values: Sequence[Decimal | None]) -> str:
    """``▁▃▅█`` scaled between the lowest and highest value; ``·`` for a missing (None) value."""
    known = [v for v in values if v is not None]
    if not known:
        return SPARK_GAP * len(values)
    low, high = min(known), max(known)
    span = high - low
    top = len(SPARK_LEVELS) - 1
    chars = []
    for value in values:
        if value is None:
            chars.append(SPARK_GAP)
        elif span == 0:
            chars.append(SPARK_LEVELS[top // 2])
        else:
            index = ((value - low) / span * top).to_integral_value(rounding=ROUND_HALF_UP)
            chars.append(SPARK_LEVELS[int(index)])
    return "".join(chars)


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    return f"{count:,} {singular if count == 1 else plural_form or singular + 's'}"
