"""The CRM-neutral endpoint: a deal-closed event, signed per Standard Webhooks.

Schema (README, "The generic event"): ``type`` is ``deal.closed`` or
``deal.reopened``; ``crm`` names the CRM that holds the deal and receives the
writes; ``deal`` carries the deal as the sender knows it.
"""

from __future__ import annotations

import binascii
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from connector.errors import PayloadInvalid, SignatureInvalid
from connector.models import Deal

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class GenericDeal(Deal):
    model_config = ConfigDict(extra="forbid", frozen=True)
    crm: str = Field(default="", exclude=True)
    account: str = Field(default="", exclude=True)


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


def parse(body: bytes) -> GenericEvent:
    """The event, or PayloadInvalid naming every field that is wrong."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadInvalid(f"body is not valid JSON: {exc}") from None
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
