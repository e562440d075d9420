"""Note bodies: kept whole up to HubSpot's limit, shortened past it, the marker always last."""

from __future__ import annotations

from adapters.hubspot import records

KEY = "4f" * 32
LIMIT = 65_536


def test_a_note_that_just_fits_is_kept_whole():
    marker = records.marker_line(KEY, 0)
    text = "x" * (LIMIT - len(marker))
    assert records.note_body(text, KEY) == text + marker


def test_one_character_more_is_shortened_and_keeps_the_marker():
    marker = records.marker_line(KEY, 0)
    body = records.note_body("x" * (LIMIT - len(marker) + 1), KEY)
    assert records.units(body) <= LIMIT
    assert body.endswith(records.SHORTENED + marker)
    assert records.position(body, KEY) == 0


def test_a_cut_never_splits_an_emoji_an_entity_or_a_line_break():
    for text in ("😀" * 40_000, "a&" * 30_000, "ab\n" * 30_000):
        kept = records.note_body(text, KEY).split(records.SHORTENED)[0]
        assert "\ufffd" not in kept
        assert not records.PARTIAL_MARKUP.search(kept)
