"""Five-field cron strings: the settings' crons are parsed here once, strictly, so a value the
schedules or the stale-data sensor cannot use stops loading with one message instead of failing
later (``@hourly`` used to pass validation and crash definition loading)."""

from __future__ import annotations

from dataclasses import dataclass

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {
    name: i
    for i, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1
    )
}
_WEEKDAYS = {name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
# (name, lowest, highest, names)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _WEEKDAYS),  # 7 is Sunday too
)


class CronError(ValueError):
    """Why a cron string is unusable, without the variable name (the caller adds it)."""


@dataclass(frozen=True)
class Cron:
    """A parsed cron string: ``text`` is the five-field form Dagster is given."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]


def _value(token: str, name: str, lo: int, hi: int, names: dict[str, int]) -> int:
    if token.upper() in names:
        return names[token.upper()]
    if not token.isdigit():
        raise CronError(f"{token!r} is not a number in the {name} field")
    value = int(token)
    if not lo <= value <= hi:
        raise CronError(f"{value} is outside {lo}-{hi} in the {name} field")
    return value


def _field(text: str, name: str, lo: int, hi: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        spec, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise CronError(f"{part!r} has no valid step in the {name} field")
            step = int(step_text)
        if spec == "*":
            first, last = lo, hi
        elif "-" in spec:
            a, _, b = spec.partition("-")
            first, last = _value(a, name, lo, hi, names), _value(b, name, lo, hi, names)
            if first > last:
                raise CronError(f"{part!r} is a backwards range in the {name} field")
        else:
            first = _value(spec, name, lo, hi, names)
            last = hi if slash else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


def parse_cron(text: str) -> Cron:
    """Parse a five-field cron string or one of ``ALIASES``; raises ``CronError``."""
    normalized = ALIASES.get(text.strip().lower(), " ".join(text.split()))
    parts = normalized.split(" ")
    if len(parts) != 5:
        raise CronError(f"it has {len(parts)} field{'s' if len(parts) != 1 else ''}")
    parsed = [_field(part, *spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    if parsed[3] == {2} and min(parsed[2]) > 29:
        raise CronError("February has no such day: it would never fire")
    return Cron(normalized, minutes=parsed[0], hours=parsed[1])
