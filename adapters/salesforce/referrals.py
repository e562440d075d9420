"""Referrals: a Lead for the person a client referred, attributed to the referrer and Opportunity."""

from __future__ import annotations

import logging
from collections.abc import Callable

import adapters.salesforce.soql as soql
from adapters.salesforce.client import SalesforceClient
from connector.errors import CrmPermanent
from connector.models import Deal, ReferralSpec

log = logging.getLogger("offboard.salesforce")

_UNKNOWN = "\0unknown"  # not described yet (None is a real answer: the org has no such value)
NOT_PROVIDED = "[not provided]"  # what Web-to-Lead writes for a required value it was not given


class ReferralWriter:
    def __init__(self, client: SalesforceClient, fetch_deal: Callable[[str], Deal]) -> None:
        self.client, self.fetch_deal = client, fetch_deal
        self._referral_source: str | None = _UNKNOWN

    def create(self, referral: ReferralSpec) -> str:
        """A Lead for the person a client referred, unless a Contact or Lead already has that email.

        Looking the email up first is also what keeps a retried call from
        creating the Lead twice.
        """
        email = referral.email.strip().lower()
        for sobject in ("Contact", "Lead"):
            found = self.client.query(soql.person_by_email(sobject, email))
            if found:
                return str(found[0]["Id"])
        fields = {
            "FirstName": referral.first_name[:40],
            "LastName": (referral.last_name or NOT_PROVIDED)[:80],
            "Email": email,
            "Company": (referral.company or NOT_PROVIDED)[:255],
            "LeadSource": self._lead_source(),
            "Description": f"{self._referred_by(referral)}\n\n{referral.note}".strip(),
        }
        created = self.client.rest(
            "sobjects/Lead", method="POST", json={k: v for k, v in fields.items() if v}
        )
        return str(created["id"])

    def _referred_by(self, referral: ReferralSpec) -> str:
        """Who introduced the Lead, on which Opportunity: by name for people, with the ids for lookups.

        A Lead has no standard field pointing at a Contact or an Opportunity, so
        the attribution is the Lead's Description (and its Lead Source).
        """
        referrer, opportunity = referral.referrer_name, referral.deal_name
        if referrer and opportunity:
            return _attribution(referral, referrer, opportunity)
        try:
            deal = self.fetch_deal(referral.deal_id)
        except CrmPermanent as exc:
            if exc.status != 404:
                raise
            log.warning("salesforce: opportunity %s is gone; the referral names ids only", referral.deal_id)
        else:
            opportunity = deal.name
            contact = next((c for c in deal.contacts if c.id == referral.referrer_contact_id), None)
            referrer = contact.full_name if contact else None
        return _attribution(referral, referrer, opportunity)

    def _lead_source(self) -> str | None:
        """The org's Lead Source value for referrals (e.g. Partner Referral), described once."""
        if self._referral_source is _UNKNOWN:
            describe = self.client.rest("sobjects/Lead/describe")
            fields = {f["name"]: f for f in describe.get("fields", [])}
            values = [
                v["value"]
                for v in (fields.get("LeadSource") or {}).get("picklistValues") or []
                if v.get("active")
            ]
            self._referral_source = next((v for v in values if "referral" in v.casefold()), None)
        return self._referral_source


def _attribution(referral: ReferralSpec, referrer: str | None, opportunity: str | None) -> str:
    who = f"contact {referral.referrer_contact_id}"
    if referrer:
        who = f"{referrer} ({who})"
    if referral.referrer_company:
        who += f" of {referral.referrer_company}"
    deal_text = f'"{opportunity}" ({referral.deal_id})' if opportunity else referral.deal_id
    return f"Referred by {who}, on opportunity {deal_text}."
