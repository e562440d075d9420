"""Installed portals' access tokens kept fresh: refreshed ahead of expiry or after HubSpot refuses
one, once across processes, and never in the clear in a log line or an error."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from adapters.base import Grant
from adapters.hubspot.install import HubSpotApp
from adapters.hubspot.records import MARKER
from adapters.hubspot.settings import HubSpotSettings
from connector.errors import CrmTransient, Disconnected
from connector.keyring import Keyring
from connector.services import Services
from connector.store import Action
from connector.tokens import REFRESH_MARGIN, TokenKeeper
from tests.integration.test_installed_accounts import (
    FIRST,
    SECOND,
    close_deal,
    install,
    installed_services,
    rows,
    run_everything,
    task_actions,
)
from tests.support.hubspot import FakeHubSpot, offboard_properties, serve, standard_portal

TOKEN_ROUTE = "POST /oauth/v3/token"


@pytest.fixture
def fake(clock) -> FakeHubSpot:
    host = offboard_properties(standard_portal(FakeHubSpot(clock=clock, token=None, portal_id=FIRST)))
    offboard_properties(standard_portal(host.add_portal(SECOND)))
    return host


@pytest.fixture
def services(db_url, store, clock, fake, httpserver) -> Services:
    return installed_services(db_url, store, clock, serve(fake, httpserver))


class SlowApp:
    """HubSpot's OAuth app, its refresh taking a while: long enough for others to ask meanwhile."""

    def __init__(self, app: HubSpotApp, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    def refresh(self, account: str, refresh_token: SecretStr, instance_url: str | None) -> Grant:
        time.sleep(self.seconds)
        return self.app.refresh(account, refresh_token, instance_url)


def keeper(services: Services, fake: FakeHubSpot, *, slow: float = 0.0, **options: Any) -> TokenKeeper:
    """Another process's token keeper on the same database."""
    assert services.tokens is not None
    keyring = services.tokens.connections.keyring
    assert isinstance(keyring, Keyring)
    app = HubSpotApp(HubSpotSettings.of(services.settings), clock=services.clock)
    return TokenKeeper(
        services.store,
        keyring,
        services.settings,
        services.clock,
        apps=lambda crm: SlowApp(app, slow),  # type: ignore[arg-type,return-value]
        **options,
    )


def stored_token(services: Services, portal_id: int) -> str:
    assert services.tokens is not None
    return services.tokens.connections.require("hubspot", str(portal_id)).access_token().get_secret_value()


def task_markers(fake: FakeHubSpot) -> Counter[str]:
    found = (MARKER.search(t.properties["hs_task_body"]) for t in fake.records("tasks"))
    return Counter(str(match.groups()) for match in found if match is not None)


# --- in a run ---------------------------------------------------------------------------------


def test_an_access_token_that_expires_mid_run_is_refreshed_once_and_the_run_finishes_once(
    services, fake, store, clock, caplog
):
    caplog.set_level(logging.DEBUG)
    first = install(services, fake, FIRST)
    close_deal(services, fake, FIRST, 1)
    services.worker().process_events()  # the deal read with the first token
    fake.expire(first.access_token.get_secret_value())  # HubSpot says it expired, ahead of our clock
    services.worker().run_until_idle()  # what is due now: HubSpot refuses the token on the way
    assert fake.refresh_calls == 1
    (batch,) = task_actions(store, FIRST)
    assert batch.state == "done" and batch.attempts == 1  # refreshed within the attempt

    run_everything(services)  # the rest, days later: each token renewed ahead of its expiry
    assert {a.state for a in rows(store, Action)} == {"done"}
    markers = task_markers(fake)
    # The checklist batch, and the escalations of its tasks left open past their due time.
    planned = [t for a in rows(store, Action) if a.kind == "task" for t in a.payload["tasks"]]
    checklist = {t["step_id"] for t in batch.payload["tasks"]}
    escalations = {t["step_id"] for t in planned} - checklist
    assert escalations and {e.removesuffix(":escalation") for e in escalations} < checklist
    assert len(fake.records("tasks")) == len(planned) == len(markers)
    assert set(markers.values()) == {1}  # nothing written twice
    renewed = stored_token(services, FIRST)
    assert renewed != first.access_token.get_secret_value()
    for secret in (first.access_token.get_secret_value(), renewed, first.refresh_token.get_secret_value()):
        assert secret not in caplog.text


def test_a_token_near_its_expiry_is_refreshed_before_hubspot_refuses_it(services, fake, store, clock):
    first = install(services, fake, FIRST)
    token = services.tokens.token("hubspot", str(FIRST))
    assert token() == first.access_token.get_secret_value() and fake.refresh_calls == 0
    clock.advance(minutes=26)  # four minutes left: within the margin, HubSpot would still take it
    assert timedelta(minutes=4) < REFRESH_MARGIN
    fresh = token()
    assert fake.refresh_calls == 1 and fresh != first.access_token.get_secret_value()
    assert token() == fresh and fake.refresh_calls == 1  # kept until it nears its own expiry
    stored = services.tokens.connections.require("hubspot", str(FIRST))
    assert stored.token_expires_at == clock() + timedelta(minutes=30)


def test_two_workers_needing_a_refresh_at_once_make_one_refresh_call(services, fake, clock):
    install(services, fake, FIRST)
    clock.advance(minutes=27)
    keepers = [keeper(services, fake, slow=0.3) for _ in range(2)]  # two processes
    start, got, failed = threading.Barrier(4), [], []

    def work(k: TokenKeeper) -> None:
        start.wait()
        try:
            got.append(k.token("hubspot", str(FIRST))())
        except Exception as exc:  # the assertion below shows it
            failed.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in keepers for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert failed == []
    assert fake.refresh_calls == 1
    assert len(got) == 4 and set(got) == {stored_token(services, FIRST)}


# --- the keeper's rules ------------------------------------------------------------------------


def test_a_disconnected_account_is_not_refreshed_and_says_so(services, fake, clock):
    install(services, fake, FIRST)
    services.tokens.connections.mark_disconnected("hubspot", str(FIRST), "revoked by the portal's admin")
    clock.advance(minutes=27)
    with pytest.raises(Disconnected, match=f"hubspot account {FIRST} is disconnected .revoked"):
        keeper(services, fake).token("hubspot", str(FIRST))()
    assert fake.refresh_calls == 0


def test_a_revoked_refresh_token_disconnects_the_account_alone(services, fake, clock, caplog):
    caplog.set_level(logging.DEBUG)
    gone, kept = install(services, fake, FIRST), install(services, fake, SECOND)
    fake.revoke(portal_id=FIRST)
    clock.advance(minutes=27)
    with pytest.raises(Disconnected, match="BAD_REFRESH_TOKEN") as refused:
        services.tokens.token("hubspot", str(FIRST))()
    assert services.tokens.connections.require("hubspot", str(FIRST)).status == "disconnected"
    assert services.tokens.token("hubspot", str(SECOND))() == stored_token(services, SECOND)
    assert services.tokens.connections.require("hubspot", str(SECOND)).status == "connected"
    shown = str(refused.value) + caplog.text
    for secret in (gone.refresh_token, gone.access_token, kept.refresh_token, kept.access_token):
        assert secret.get_secret_value() not in shown


def test_a_token_endpoint_that_is_down_lets_the_claim_go_and_the_next_try_refreshes(services, fake, clock):
    first = install(services, fake, FIRST)
    clock.advance(minutes=27)
    fake.inject(503, route=TOKEN_ROUTE)
    token = services.tokens.token("hubspot", str(FIRST))
    with pytest.raises(CrmTransient, match="503"):
        token()
    assert not fake.faults  # the refresh met the outage
    assert services.tokens.connections.require("hubspot", str(FIRST)).status == "connected"
    fresh = token()  # the claim was let go: this try refreshes
    assert fresh == stored_token(services, FIRST) != first.access_token.get_secret_value()
    assert fake.refresh_calls == 1  # the grant that reached HubSpot's token endpoint


def test_a_process_waiting_on_anothers_refresh_gives_up_for_now_without_calling_hubspot(
    services, fake, clock
):
    install(services, fake, FIRST)
    clock.advance(minutes=27)
    held = services.tokens.connections.claim_refresh("hubspot", str(FIRST), clock() + timedelta(minutes=1))
    assert held  # another process is refreshing (and takes long)
    waiting = keeper(services, fake, wait_seconds=0.3)
    with pytest.raises(CrmTransient, match="being refreshed by another process"):
        waiting.token("hubspot", str(FIRST))()
    assert fake.refresh_calls == 0


def test_a_refresh_token_the_crm_rotates_is_stored_sealed(services, fake, clock, store):
    install(services, fake, FIRST)
    clock.advance(minutes=27)

    class Rotating:
        def refresh(self, account: str, refresh_token: SecretStr, instance_url: str | None) -> Grant:
            return Grant(
                account=account,
                access_token=SecretStr("access-after-rotation"),
                refresh_token=SecretStr("refresh-after-rotation"),
                expires_at=clock() + timedelta(hours=2),
            )

    rotating = TokenKeeper(
        store,
        services.tokens.connections.keyring,
        services.settings,
        clock,
        apps=lambda crm: Rotating(),  # type: ignore[arg-type,return-value]
    )
    assert rotating.token("hubspot", str(FIRST))() == "access-after-rotation"
    stored = services.tokens.connections.require("hubspot", str(FIRST))
    assert stored.refresh_token().get_secret_value() == "refresh-after-rotation"
    assert "refresh-after-rotation" not in (stored.sealed_refresh or "")


def test_an_account_removed_meanwhile_stops_getting_its_token_once_the_store_is_looked_at_again(
    services, fake, monkeypatch
):
    from connector import tokens

    install(services, fake, FIRST)
    token = services.tokens.token("hubspot", str(FIRST))
    assert token() == stored_token(services, FIRST)
    services.tokens.connections.remove("hubspot", str(FIRST), actor="cli")  # another process's command
    monkeypatch.setattr(tokens, "RECHECK_SECONDS", 0.0)  # the recheck interval has passed
    with pytest.raises(Disconnected, match=f"hubspot account {FIRST} is disconnected .removed by cli"):
        token()
    assert fake.refresh_calls == 0
