"""One money formatter: every dollar figure Heliox shows is written by ``money.format_usd``."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from heliox_orchestration.money import format_usd


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("12345.675", "$12,345.68"),
        ("0.125", "$0.13"),  # half-up, not half-even (Python's default for Decimal formatting)
        ("-1234.565", "-$1,234.57"),
        ("-0.004", "$0.00"),  # rounds to zero cents: no sign, not "$-0.00" or "-$0.00"
        ("-0.005", "-$0.01"),
        ("1000000000", "$1,000,000,000.00"),
        ("-416.670417", "-$416.67"),
    ],
)
def test_format_usd_is_half_up_to_the_cent_with_the_sign_in_front(amount: str, shown: str) -> None:
    assert format_usd(Decimal(amount)) == shown


def test_no_other_money_formatter_is_left() -> None:
    """Every module formats dollars with ``format_usd``: no second formatter."""
    root = Path(__file__).resolve().parents[1] / "heliox_orchestration"
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if re.search(r":,\.2f\}|\bdef (usd|money|_dollars)\(", p.read_text()) and p.name != "money.py"
    ]
    assert offenders == []
