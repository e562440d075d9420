"""Personal survey and referral links: signed, expiring tokens (itsdangerous)."""

from __future__ import annotations

from typing import Any

from itsdangerous import URLSafeTimedSerializer

SALTS = {"survey": "offboard.survey", "referral": "offboard.referral"}
PREFIX = {"survey": "s", "referral": "r"}


def serializer(secret_key: str, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt=SALTS[purpose])


def make_link(public_url: str, secret_key: str, purpose: str, claims: dict[str, Any]) -> str:
    token = serializer(secret_key, purpose).dumps(claims)
    return f"{public_url}/{PREFIX[purpose]}/{token}"
