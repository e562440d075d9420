"""Every JSON endpoint's parser keeps numbers to what each store gives back unchanged."""

from __future__ import annotations

import pytest

from connector.errors import PayloadInvalid
from connector.generic import load_json


@pytest.mark.parametrize("number", ["1e+100", "-1e100", "1.5e300", "2.5e-301", "1e-101"])
def test_numbers_a_store_would_give_back_longer_than_the_limit_are_refused(number):
    with pytest.raises(PayloadInvalid, match="out of range"):
        load_json(f'{{"n": {number}}}'.encode())


@pytest.mark.parametrize("number", ["0", "0.0", "-0.5", "1e99", "123456.789", "1e-99"])
def test_ordinary_numbers_are_kept(number):
    assert load_json(f'{{"n": {number}}}'.encode()) == {
        "n": float(number) if "." in number or "e" in number else int(number)
    }
