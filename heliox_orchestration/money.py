"""Money: US dollars as ``Decimal`` with six decimals in storage, whole cents on display.

Kept free of SQLAlchemy and pandas so that code loaded with the definitions can use it.
"""

from __future__ import annotations

from decimal import Decimal

MICROS = Decimal("0.000001")
CENTS = Decimal("0.01")


def micros_to_dollars(micros: int | Decimal | None) -> Decimal:
    return (Decimal(int(micros or 0)) * MICROS).quantize(MICROS)
