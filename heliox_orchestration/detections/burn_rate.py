"""The burn-rate rule: which alert level a day's spend has crossed."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal


def burn_level(cost: Decimal, threshold: Decimal, escalation_pct: Iterable[int]) -> int | None:
    """The highest alert level crossed: 100 (the threshold), then each escalation percent."""
    crossed = [level for level in (100, *escalation_pct) if cost > threshold * level / 100]
    return max(crossed) if crossed else None


def levels_up_to(level: int, escalation_pct: Iterable[int]) -> list[int]:
    """Every level a day at ``level`` has passed, lowest first."""
    return [lvl for lvl in (100, *escalation_pct) if lvl <= level]
