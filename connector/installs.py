"""Installing Offboard into a CRM account by OAuth: the install link, and the callback that ends it.

``start`` makes the consent URL a CRM admin's browser is sent to: a new install state is
stored (only its nonce's hash, and Salesforce's PKCE verifier encrypted, see
``connector.connections``) and the nonce goes out signed with ``OFFBOARD_SECRET_KEY``
as the ``state`` parameter. ``finish`` takes the CRM's redirect back: the state must carry
our signature, be at most ``STATE_TTL`` old and never used before (taking it deletes it,
before the code is exchanged, so a callback replayed in a race finds it gone); then the
code is exchanged for the account's tokens, the connection stored (encrypted), the
account set up (the properties Offboard writes, the fields it reads), and any of its
actions that waited for a reinstall made due. A refused state or code stores nothing.

The PKCE verifier never leaves the server: a state readable in the browser beside the code
would defeat PKCE, so the browser carries only the signed nonce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from dataclasses import dataclass, field

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

import adapters
from adapters.base import Connection, Grant, OAuthApp
from connector import queue
from connector.connections import STATE_TTL, Connections, StateRefused, TakenState
from connector.errors import ConnectorError, CrmError, CrmTransient
from connector.keyring import Keyring
from connector.services import Services
from connector.usecases.uow import unit_of_work

log = logging.getLogger("offboard.install")

STATE_SALT = "offboard.install-state"


class InstallRefused(ConnectorError):
    """An install that cannot start or finish: ``status`` is what the browser is answered."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Installed:
    crm: str
    account: str
    installed_by: str | None
    scopes: tuple[str, ...]
    notes: list[str] = field(default_factory=list)  # what the admin should still do


def inbound_key(secret_key: str, crm: str, account: str) -> str:
    """The key an installed account's inbound URL carries (a Salesforce org's outbound-message
    URL): HMAC-SHA256 of the account under the deployment's secret key, so it is stored nowhere
    and a new OFFBOARD_SECRET_KEY gives every account a new URL."""
    digest = hmac.new(secret_key.encode(), f"offboard.inbound:{crm}:{account}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def redirect_uri(found: Services, crm: str) -> str:
    return f"{found.settings.public_url.rstrip('/')}/oauth/{crm}/callback"


def start(found: Services, crm: str) -> str:
    """The consent URL for a new install into ``crm``; InstallRefused when installs are off."""
    app, repo = _app(found, crm), _connections(found)
    verifier = app.verifier()
    nonce = repo.start_install(crm, code_verifier=verifier)
    return app.authorize_url(redirect_uri(found, crm), _signer(found).dumps(nonce), verifier)


def finish(found: Services, crm: str, args: dict[str, str]) -> Installed:
    """Complete the install the CRM redirected back with; InstallRefused (400) stores nothing."""
    app, repo = _app(found, crm), _connections(found)
    if args.get("error"):
        said = args.get("error_description") or args["error"]
        raise InstallRefused(400, f"the install was not approved in {crm}: {said[:200]}")
    code, state = args.get("code", ""), args.get("state", "")
    if not code or not state:
        raise InstallRefused(400, "the callback needs both code and state: start the install again")
    taken = _take_state(found, repo, crm, state)
    redirect = redirect_uri(found, crm)
    try:
        verifier = taken.code_verifier.get_secret_value() if taken.code_verifier else None
        grant = app.exchange(code, redirect, verifier)
    except CrmTransient as exc:
        reason = f"{crm} could not be reached to finish the install ({exc}); start again"
        raise InstallRefused(503, reason) from None
    except CrmError as exc:
        reason = f"{crm} refused the install's code ({exc}); start the install again"
        raise InstallRefused(400, reason) from None
    stored = repo.save_install(
        crm,
        grant.account,
        access_token=grant.access_token,
        refresh_token=grant.refresh_token,
        expires_at=grant.expires_at,
        scopes=grant.scopes,
        installed_by=grant.installed_by,
        instance_url=grant.instance_url,
    )
    with unit_of_work(found.store, actor="install", clock=found.clock) as uow:
        queue.resume_account(uow.session, crm, grant.account, uow.now)
    log.info("installed in %s account %s", crm, stored.account)
    return Installed(crm, grant.account, grant.installed_by, grant.scopes, _set_up(found, crm, app, grant))


def _take_state(found: Services, repo: Connections, crm: str, state: str) -> TakenState:
    try:
        nonce = _signer(found).loads(state, max_age=int(STATE_TTL.total_seconds()))
    except SignatureExpired:
        raise InstallRefused(400, "the install link expired (10 minutes): start the install again") from None
    except BadSignature:
        raise InstallRefused(400, "the install's state is not one this deployment made") from None
    if not isinstance(nonce, str):
        raise InstallRefused(400, "the install's state is not one this deployment made")
    try:
        return repo.take_state(nonce, crm)
    except StateRefused as exc:
        raise InstallRefused(400, f"the install's state is {exc.reason}: start the install again") from None


def _set_up(found: Services, crm: str, app: OAuthApp, grant: Grant) -> list[str]:
    """The account's set-up with the tokens just granted; a failure is a note, not a failed install."""
    token = grant.access_token.get_secret_value()
    connection = Connection(
        crm=crm,
        account=grant.account,
        settings=found.settings.crm(crm),
        zone=found.settings.zone,
        token=lambda: token,
        instance_url=grant.instance_url,
    )
    try:
        return app.after_install(adapters.build(connection, found.store))
    except CrmError as exc:
        log.warning("installed in %s account %s, but setting it up failed: %s", crm, grant.account, exc)
        return [f"Setting the account up failed ({exc}); install again to retry."]


def _app(found: Services, crm: str) -> OAuthApp:
    try:
        plugin = adapters.plugin(crm)
    except KeyError:
        raise InstallRefused(404, f"no CRM called {crm!r} can be installed here") from None
    if plugin.oauth is None:
        raise InstallRefused(404, f"{crm} is not installed by OAuth")
    app = plugin.oauth(found.settings.crm(crm))
    missing = app.missing()
    if missing:
        raise InstallRefused(503, f"installs into {crm} are off here: {missing}")
    return app


def _connections(found: Services) -> Connections:
    keyring = Keyring.from_settings(found.settings)
    if keyring is None:
        raise InstallRefused(503, "installs are off here: OFFBOARD_ENCRYPTION_KEYS is not set")
    return Connections(found.store, keyring, clock=found.clock)


def _signer(found: Services) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(found.settings.secret_key.get_secret_value(), salt=STATE_SALT)
