"""Money: US dollars as ``Decimal`` with six decimals in storage, whole cents on display.

Kept free of SQLAlchemy and pandas so that code loaded with the definitions can use it.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

MICROS = Decimal("0.000001")
CENTS = Decimal("0.01")


def micros_to_dollars(micros: int | Decimal | None) -> Decimal:
    return (Decimal(int(micros or 0)) * MICROS).quantize(MICROS)


def format_usd(amount: Decimal) -> str:
    """``$12,345.68``: rounded half-up to the cent, ``-$5.00`` below zero. An amount that rounds
    to zero cents shows as ``$0.00`` whatever its sign. Every dollar figure Heliox shows (Slack
    messages, Dagster metadata, import reports and errors) is written by this one function."""
    cents = Decimal(amount).quantize(CENTS, rounding=ROUND_HALF_UP)
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents):,.2f}"
