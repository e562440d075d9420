"""The CRM-neutral endpoint: a deal-closed event, signed per Standard Webhooks.

Schema (README, "The generic event"): ``type`` is ``deal.closed`` or
``deal.reopened``; ``crm`` names the CRM that holds the deal and receives the
writes; ``deal`` carries the deal as the sender knows it.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from connector.errors import PayloadInvalid, SignatureInvalid
from connector.models import Deal

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
MAX_KEY_LENGTH = 255  # events.event_key
MAX_ID_LENGTH = 64  # runs.deal_id, answers.contact_id, the sandbox's ids
MAX_DEPTH = 32
MAX_DIGITS = 100
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Checks on the raw bytes that let most bodies skip the per-value checks below: a decoded string
# can hold \u0000 or a lone surrogate only through a \u escape (raw, one is not valid JSON, the
# other not valid UTF-8), and an integer of too many digits needs a run of that many digits.
_ESCAPED = b"\\u"
_LONG_DIGITS = re.compile(rb"[0-9]{%d}" % (MAX_DIGITS + 1))


class GenericDeal(Deal):
    model_config = ConfigDict(extra="forbid", frozen=True)
    crm: str = Field(default="", exclude=True)
    account: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _ids_fit(self) -> GenericDeal:
        """Ids end up in fixed-width columns: refuse here what the worker could not store."""
        people = [("id", self.id), ("owner.id", self.owner.id if self.owner else "")]
        people.append(("company.id", self.company.id if self.company else ""))
        people += [(f"contacts[{n}].id", c.id) for n, c in enumerate(self.contacts)]
        too_long = [name for name, value in people if len(value) > MAX_ID_LENGTH]
        if too_long:
            raise ValueError(f"{', '.join(too_long)}: at most {MAX_ID_LENGTH} characters")
        if not self.id.strip():
            raise ValueError("id: must not be empty")
        return self


class GenericEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(default=None, max_length=255)
    type: Literal["deal.closed", "deal.reopened"]
    occurred_at: datetime | None = None
    crm: str = Field(default="sandbox", max_length=32)
    account: str | None = Field(default=None, max_length=64)
    deal: GenericDeal

    def to_deal(self, account: str) -> Deal:
        data = self.deal.model_dump(exclude={"crm", "account"})
        return Deal(crm=self.crm, account=account, **data)


def verify(secret: str, body: bytes, headers: dict[str, str]) -> None:
    """Raise SignatureInvalid unless ``body`` carries a valid Standard Webhooks signature."""
    lowered = {k.lower(): v for k, v in headers.items()}
    missing = [name for name in SIGNATURE_HEADERS if not lowered.get(name)]
    if missing:
        raise SignatureInvalid(f"unsigned request: missing {', '.join(missing)} header(s)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureInvalid("signature does not verify") from None
    try:
        Webhook(secret).verify(text, lowered, json_parse=False)
    except WebhookVerificationError as exc:
        raise SignatureInvalid(f"signature does not verify: {exc}") from None
    except (ValueError, binascii.Error):
        # The library splits and base64-decodes the header without guarding it.
        raise SignatureInvalid("signature does not verify: malformed webhook-signature header") from None


def event_key(msg_id: str) -> str:
    """The ``webhook-id`` as the inbox keys the event: 1-255 printable characters."""
    if not msg_id.isprintable() or not 0 < len(msg_id) <= MAX_KEY_LENGTH:
        raise PayloadInvalid(f"webhook-id must be 1 to {MAX_KEY_LENGTH} printable characters")
    return msg_id


def load_json(body: bytes) -> Any:
    """A request body as JSON that every store can keep, or PayloadInvalid saying why not.

    Shared by every JSON endpoint (generic, HubSpot, Salesforce Flow). Refused: what
    is not UTF-8 or not standard JSON (NaN, Infinity, numbers out of range or with
    more than 100 digits), nesting deeper than 32 levels, and strings or keys holding
    ``\\u0000`` or an unpaired surrogate (Postgres cannot store them; neither is text).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadInvalid(f"body is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    parse_int = _short_int if _LONG_DIGITS.search(body) else None  # None: json's own, in C
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite, parse_int=parse_int)
    except json.JSONDecodeError as exc:
        raise PayloadInvalid(f"body is not valid JSON: {exc}") from None
    except ValueError as exc:  # from the parse_* hooks below
        raise PayloadInvalid(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise PayloadInvalid(f"body is nested more than {MAX_DEPTH} levels deep") from None
    # Nesting deeper than the limit needs more opening brackets than the limit.
    deep = body.count(b"[") + body.count(b"{") > MAX_DEPTH
    problem = _unstorable(data, strings=_ESCAPED in body) if deep or _ESCAPED in body else None
    if problem:
        raise PayloadInvalid(problem)
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    if len(text) > MAX_DIGITS * 2:
        raise ValueError(f"a number is written with more than {MAX_DIGITS * 2} characters")
    value = float(text)
    # Postgres keeps a JSON number in plain decimal notation: 1e300 would come back as a
    # 301-digit integer. Magnitudes are held to what reads back within the digit limit.
    if not math.isfinite(value) or abs(value) >= 10.0**MAX_DIGITS or 0 < abs(value) < 10.0**-MAX_DIGITS:
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _short_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"a number has more than {MAX_DIGITS} digits")
    return int(text)


def _unstorable(data: Any, *, strings: bool = True) -> str | None:
    """Nesting past the limit, or (if ``strings``) a key or string the stores cannot keep."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"body is nested more than {MAX_DEPTH} levels deep"
        if isinstance(value, dict):
            for key, child in value.items():
                if strings and _UNSTORABLE.search(key):
                    return "a key holds \\u0000 or an unpaired surrogate (\\ud800-\\udfff)"
                stack.append((child, depth + 1))
        elif isinstance(value, list):
            stack.extend((child, depth + 1) for child in value)
        elif strings and isinstance(value, str) and _UNSTORABLE.search(value):
            return "a string holds \\u0000 or an unpaired surrogate (\\ud800-\\udfff)"
    return None


def parse(body: bytes) -> GenericEvent:
    """The event, or PayloadInvalid naming every field that is wrong."""
    data = load_json(body)
    if not isinstance(data, dict):
        raise PayloadInvalid("body must be a JSON object (see the generic event schema in the README)")
    try:
        return GenericEvent.model_validate(data)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in error["loc"]) or "(body)", "problem": error["msg"]}
            for error in exc.errors(include_url=False, include_input=False)
        ]
        raise PayloadInvalid("body does not follow the generic event schema", details=details) from None


def sign(secret: str, msg_id: str, timestamp: datetime, body: str) -> dict[str, str]:
    """Headers that sign ``body``: what senders (and ``offboard demo``) attach."""
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=timestamp, data=body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def as_payload(event: GenericEvent) -> dict[str, Any]:
    return event.model_dump(mode="json", exclude_none=True)
