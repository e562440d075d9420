"""Personal survey and referral links: the one place that makes and reads them.

A link is a signed, expiring token (itsdangerous) naming a run, a step, a contact and
what it asks for. Tokens are never stored: the worker signs one when it sends an
invitation, ``offboard runs --reveal-links`` signs the same again, and the client
pages read them back here.
"""

from __future__ import annotations

from typing import Any, Literal

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pydantic import BaseModel, ValidationError

from connector.errors import LinkProblem

SALTS = {"survey": "offboard.survey", "referral": "offboard.referral"}
PREFIX = {"survey": "s", "referral": "r"}
Purpose = Literal["survey", "referral"]


class Claims(BaseModel):
    """What a personal link names: its run, the step it answers, the contact, and what it asks."""

    run: int
    step: str
    contact: str
    kind: Literal["nps", "csat", "ces", "referral"]


def serializer(secret_key: str, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt=SALTS[purpose])


def make_link(public_url: str, secret_key: str, purpose: str, claims: dict[str, Any]) -> str:
    token = serializer(secret_key, purpose).dumps(claims)
    return f"{public_url}/{PREFIX[purpose]}/{token}"


def read_link(secret_key: str, purpose: str, token: str, *, max_age_days: int) -> Claims:
    """The claims a link carries, or LinkProblem: "expired" after ``max_age_days``, "forged" if tampered.

    A survey token presented as a referral link (or the other way round) is forged too.
    """
    try:
        data = serializer(secret_key, purpose).loads(token, max_age=max_age_days * 86400)
    except SignatureExpired:
        raise LinkProblem("expired") from None
    except BadSignature:
        raise LinkProblem("forged") from None
    try:
        claims = Claims.model_validate(data)
    except ValidationError:
        raise LinkProblem("forged") from None
    if (purpose == "referral") != (claims.kind == "referral"):
        raise LinkProblem("forged")
    return claims


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
