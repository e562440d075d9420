"""Which bucket a survey answer falls in, at every score of every scale."""

from __future__ import annotations

import pytest

from connector.models import category

D, P, PROMOTER = "detractor", "passive", "promoter"

# score → bucket, for the whole scale
SCALES = {
    "nps": {0: D, 1: D, 2: D, 3: D, 4: D, 5: D, 6: D, 7: P, 8: P, 9: PROMOTER, 10: PROMOTER},
    "csat": {1: D, 2: D, 3: D, 4: P, 5: PROMOTER},
    "ces": {1: D, 2: D, 3: D, 4: D, 5: P, 6: PROMOTER, 7: PROMOTER},
}


@pytest.mark.parametrize(
    ("kind", "score", "bucket"),
    [(kind, score, bucket) for kind, scale in SCALES.items() for score, bucket in scale.items()],
)
def test_every_score_falls_in_its_bucket(kind, score, bucket):
    assert category(kind, score) == bucket


@pytest.mark.parametrize(
    ("kind", "last_detractor", "first_promoter"),
    [("nps", 6, 9), ("csat", 3, 5), ("ces", 4, 6)],
)
def test_the_boundaries_of_each_scale(kind, last_detractor, first_promoter):
    assert category(kind, last_detractor) == D
    assert category(kind, last_detractor + 1) == P
    assert category(kind, first_promoter - 1) == P
    assert category(kind, first_promoter) == PROMOTER


def test_nps_has_two_passive_scores_and_csat_and_ces_one():
    passives = {kind: [s for s, bucket in scale.items() if bucket == P] for kind, scale in SCALES.items()}
    assert passives == {"nps": [7, 8], "csat": [4], "ces": [5]}
    assert all(category(kind, s) == P for kind, scores in passives.items() for s in scores)
