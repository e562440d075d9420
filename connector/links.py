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


def invite_claims(
    run_id: int, kind: str, step_id: str, payload: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """What a survey or referral action's link names (its purpose, and the signed claims).

    The worker signs these when it sends the invitation; ``offboard runs --reveal-links``
    signs the same again, since tokens are never stored.
    """
    purpose = "survey" if kind == "survey" else "referral"
    claims = {
        "run": run_id,
        "step": payload.get("answers", step_id),  # a reminder answers the survey it follows
        "contact": payload["contact_id"],
        "kind": payload["survey"] if purpose == "survey" else "referral",
    }
    return purpose, claims
