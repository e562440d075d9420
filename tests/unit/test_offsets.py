from datetime import date

import pytest

from connector.playbooks.offsets import Offset, add_business_days

FRIDAY = date(2026, 11, 20)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-30d", date(2026, 10, 21)),
        ("+3d", date(2026, 11, 23)),
        ("2w", date(2026, 12, 4)),
        ("+1bd", date(2026, 11, 23)),  # Friday + 1 business day = Monday
        ("+5bd", date(2026, 11, 27)),
        ("-1bd", date(2026, 11, 19)),
        ("0d", FRIDAY),
    ],
)
def test_offsets_from_a_friday(text, expected):
    assert Offset.parse(text).apply(FRIDAY) == expected


def test_business_days_backwards_skip_the_weekend():
    monday = date(2026, 11, 23)
    assert add_business_days(monday, -1) == FRIDAY
    assert add_business_days(date(2026, 11, 21), 0) == monday  # a Saturday rolls forward


@pytest.mark.parametrize("bad", ["30", "-3x", "d", "+-1d", "1.5d", ""])
def test_bad_offsets_say_what_is_expected(bad):
    with pytest.raises(ValueError, match="business days"):
        Offset.parse(bad)
