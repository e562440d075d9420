"""Salesforce's OAuth app: how an org installs Offboard (``GET /install/salesforce``) and keeps its session.

The External Client App uses the web-server flow with PKCE (``adapters.salesforce.oauth``);
this is the plugin's side of the core's ``OAuthApp``. Salesforce's token answer carries no
expiry: a session lasts the org's session timeout (two hours by default), so a session is
treated as ending ``SESSION_LIFETIME`` after it was issued and refreshed before that; a session
ended early (a shorter timeout, a revoked session) answers INVALID_SESSION_ID, and the client
logs in again then. Once installed, the org is checked for the fields Offboard reads, and
for the Opportunity fields where it shows a checklist's progress.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from adapters.base import CrmAdapter, CrmSettings, Grant
from adapters.salesforce import ids, oauth
from adapters.salesforce.settings import SalesforceSettings
from connector.clock import Clock, utcnow
from connector.errors import CrmPermanent

if TYPE_CHECKING:
    import requests

SESSION_LIFETIME = timedelta(hours=2)  # Salesforce's default session timeout
# The Opportunity fields that show a checklist's progress (docs/salesforce.md, manifest.json).
PROGRESS_FIELDS = {
    "Offboard_Status__c": "Picklist",
    "Offboard_Progress__c": "Text (20)",
    "Offboard_Next_Due__c": "Date",
    "Offboard_Playbook__c": "Text (255)",
}
STATUS_VALUES = ("not_started", "in_progress", "overdue", "needs_evidence", "complete", "cancelled")


class SalesforceApp:
    def __init__(
        self, settings: SalesforceSettings, *, http: requests.Session | None = None, clock: Clock = utcnow
    ) -> None:
        self.settings, self.http, self.clock = settings, http, clock

    def missing(self) -> str | None:
        return None if self.settings.consumer_key else "SALESFORCE_CONSUMER_KEY is not set"

    def verifier(self) -> str | None:
        return oauth.Pkce.new().verifier

    def authorize_url(self, redirect_uri: str, state: str, verifier: str | None) -> str:
        if verifier is None:
            raise CrmPermanent("salesforce: an install needs its PKCE verifier")
        s = self.settings
        return oauth.authorize_url(
            s.login_url, s.consumer_key, redirect_uri, state, oauth.challenge(verifier)
        )

    def exchange(self, code: str, redirect_uri: str, verifier: str | None) -> Grant:
        if verifier is None:
            raise CrmPermanent("salesforce: an install needs its PKCE verifier")
        s = self.settings
        session = oauth.exchange_code(
            s.login_url,
            s.consumer_key,
            s.consumer_secret,
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=verifier,
            http=self.http,
        )
        return Grant(
            account=ids.short(session.org_id),
            access_token=session.access_token,
            refresh_token=session.refresh_token,
            expires_at=session.issued_at + SESSION_LIFETIME,
            scopes=session.scopes,
            installed_by=f"user {session.user_id}",
            instance_url=session.instance_url,
        )

    def refresh(self, account: str, refresh_token: SecretStr, instance_url: str | None) -> Grant:
        import requests

        s = self.settings
        if not s.consumer_key:
            raise CrmPermanent("salesforce: SALESFORCE_CONSUMER_KEY is not set; no session can be renewed")
        rotated: list[SecretStr] = []
        grant = oauth.RefreshGrant(
            s.login_url,
            s.consumer_key,
            refresh_token,
            s.consumer_secret,
            org_id=account,
            on_rotate=rotated.append,
        )
        token, host = grant(self.http or requests.Session())
        return Grant(
            account=account,
            access_token=SecretStr(token),
            refresh_token=rotated[-1] if rotated else refresh_token,
            expires_at=self.clock() + SESSION_LIFETIME,
            instance_url=f"https://{host}",
        )

    def after_install(self, adapter: CrmAdapter) -> list[str]:
        """Name what the org lacks: the Opportunity fields the settings point at, Task access."""
        from adapters.salesforce.adapter import SalesforceAdapter

        assert isinstance(adapter, SalesforceAdapter)
        notes = []
        fields = {"SALESFORCE_CONTRACT_TYPE_FIELD": self.settings.contract_type_field}
        fields["SALESFORCE_CONTRACT_END_FIELD"] = self.settings.contract_end_field
        for variable, path in fields.items():
            if not _has_field(adapter.client.rest, "Opportunity", path):
                notes.append(
                    f"The Opportunity field {path} ({variable}) does not exist in this org: create it, or "
                    f"name yours with `offboard connections set salesforce {adapter.account} …`."
                )
        notes += progress_missing(adapter.client.rest("sobjects/Opportunity/describe"))
        task = adapter.client.rest("sobjects/Task/describe")
        if not task.get("createable", True):
            notes.append("The integration user cannot create Tasks: grant it Create on Task.")
        return notes


def progress_missing(describe: dict[str, Any]) -> list[str]:
    """What the Opportunity lacks of the progress fields: each missing field, and the status
    values its picklist does not have."""
    described = {f["name"]: f for f in describe.get("fields", [])}
    notes = [
        f"The Opportunity field {name} ({kind}) does not exist in this org: create it to see "
        "the checklist's progress on the Opportunity (docs/salesforce.md, Fields to create)."
        for name, kind in PROGRESS_FIELDS.items()
        if name not in described
    ]
    status = described.get("Offboard_Status__c")
    if status is not None:
        values = {v.get("value") for v in status.get("picklistValues") or [] if v.get("active", True)}
        lacking = [v for v in STATUS_VALUES if v not in values]
        if lacking:
            notes.append(f"The picklist Offboard_Status__c lacks the values {', '.join(lacking)}: add them.")
    return notes


def _has_field(rest: Any, sobject: str, path: str) -> bool:
    """Whether ``Relationship.Field`` (one hop) or ``Field`` exists on ``sobject``."""
    described = {f["name"]: f for f in rest(f"sobjects/{sobject}/describe").get("fields", [])}
    if "." not in path:
        return path in described
    relationship, _, rest_of_path = path.partition(".")
    for field in described.values():
        if field.get("relationshipName") == relationship and field.get("referenceTo"):
            return _has_field(rest, field["referenceTo"][0], rest_of_path)
    return False


def app(settings: CrmSettings) -> SalesforceApp:
    """The plugin's ``oauth``: the app for these settings."""
    return SalesforceApp(SalesforceSettings.of(settings))
