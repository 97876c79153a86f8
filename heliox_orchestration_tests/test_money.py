"""One money formatter: every dollar figure Heliox shows is written by ``money.format_usd``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from heliox_orchestration.alerts.formatting import money
from heliox_orchestration.costs.common import usd
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


def test_the_message_and_metadata_formatters_are_the_same_function() -> None:
    assert money is format_usd and usd is format_usd
