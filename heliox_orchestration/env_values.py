"""Typed values from environment variables: each parser returns the default when the variable is
unset or blank and raises ``SettingsError`` naming the variable and what is allowed otherwise."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path

from heliox_orchestration.cron import CronError, parse_cron


class SettingsError(ValueError):
    """A configuration value is wrong; the message names the variable and what is allowed."""


def env_int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number; allowed: {lo}-{hi}.") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={value} is out of range; allowed: {lo}-{hi}.")
    return value


def env_decimal(env: Mapping[str, str], name: str, default: Decimal, lo: Decimal, hi: Decimal) -> Decimal:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise SettingsError(f"{name}={raw!r} is not a number; allowed: {lo} to {hi}.") from None
    if not value.is_finite() or not lo <= value <= hi:
        raise SettingsError(f"{name}={raw} is out of range; allowed: {lo} to {hi}.")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("true", "false"):
        return raw == "true"
    raise SettingsError(f"{name}={env[name]!r} is not a boolean; use true or false.")


def env_cron(env: Mapping[str, str], name: str, default: str) -> str:
    """The five-field form of a cron setting (``@hourly`` becomes ``0 * * * *``)."""
    raw = env.get(name, "").strip() or default
    try:
        cron = parse_cron(raw)
    except CronError as exc:
        raise SettingsError(
            f"{name}={raw!r} is not a valid cron string ({exc}); expected five fields "
            f"(minute hour day month weekday), e.g. {default!r}, or @hourly/@daily."
        ) from None
    return cron.text


def env_url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.startswith(("http://", "https://")):
        raise SettingsError(f"{name} must start with http:// or https://.")
    return raw.rstrip("/")


def env_optional_decimal(env: Mapping[str, str], name: str, lo: Decimal, hi: Decimal) -> Decimal | None:
    if not env.get(name, "").strip():
        return None
    return env_decimal(env, name, lo, lo, hi)


def env_folder(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw)
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise SettingsError(
            f"{name}={raw} {what}; create the folder (or mount it into every Heliox container), "
            f"or unset {name}."
        )
    return path
