"""Installing into HubSpot portals by OAuth v3: codes, refreshes, refusals, and portals kept apart.

The adapter's OAuth client (requests) and HubSpot's own SDK talk to the fake over HTTP, as they
would to api.hubapi.com; the fake holds several portals behind one host.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from hubspot import HubSpot
from hubspot.crm.deals import ApiException as DealsApiException
from hubspot.crm.objects.tasks import ApiException as TasksApiException
from hubspot.crm.objects.tasks import SimplePublicObjectInputForCreate
from pydantic import SecretStr
from urllib3.util.retry import Retry

from adapters.hubspot import oauth
from adapters.hubspot.settings import HubSpotSettings
from connector.errors import CrmPermanent, CrmTransient
from connector.settings import load_settings
from tests.support.faults import Fault
from tests.support.hubspot import (
    CLIENT_SECRET,
    INSTALLER,
    PORTAL_ID,
    REDIRECT_URI,
    TOKEN,
    FakeHubSpot,
    add_deal,
    oauth_overrides,
    offboard_properties,
    serve,
    standard_portal,
)

OTHER = 99_000_111
TOKEN_ROUTE = "POST /oauth/v3/token"


@pytest.fixture
def fake(clock):
    host = offboard_properties(standard_portal(FakeHubSpot(clock=clock)))
    offboard_properties(standard_portal(host.add_portal(OTHER)))
    return host


@pytest.fixture
def url(fake, httpserver):
    return serve(fake, httpserver)


@pytest.fixture
def portal(url) -> HubSpotSettings:
    return HubSpotSettings.of(load_settings(**oauth_overrides(url)))


def install(fake: FakeHubSpot, portal: HubSpotSettings, portal_id: int, clock) -> oauth.Tokens:
    code = fake.authorize(portal_id, scopes=HubSpotSettings.scopes)
    return oauth.exchange_code(portal, code, REDIRECT_URI, clock=clock)


def sdk(url: str, tokens: oauth.Tokens) -> HubSpot:
    return HubSpot(access_token=tokens.access_token.get_secret_value(), host=url, retry=Retry(total=0))


def test_the_install_link_asks_for_the_apps_scopes_and_hubspot_answers_the_callback_with_code_and_state(
    fake, portal, url
):
    link = oauth.authorize_url(portal, REDIRECT_URI, "signed-state")
    query = parse_qs(urlsplit(link).query)
    assert link.startswith(f"{url}/oauth/authorize?")
    assert query["client_id"] == [portal.client_id]
    assert query["redirect_uri"] == [REDIRECT_URI] and query["state"] == ["signed-state"]
    assert query["scope"][0].split() == list(HubSpotSettings.scopes)
    assert "client_secret" not in query
    callback = urlsplit(fake.consent(link, portal_id=OTHER))
    answered = parse_qs(callback.query)
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == REDIRECT_URI
    assert answered["state"] == ["signed-state"] and answered["code"][0]


def test_a_code_becomes_tokens_for_its_portal_with_the_installer_and_a_30_minute_expiry(fake, portal, clock):
    tokens = install(fake, portal, OTHER, clock)
    assert tokens.portal_id == OTHER and tokens.user == INSTALLER and tokens.user_id == 2_001
    assert tokens.scopes == HubSpotSettings.scopes
    assert tokens.expires_at == clock() + timedelta(minutes=30)
    shown = repr(tokens) + str(tokens)
    assert tokens.access_token.get_secret_value() not in shown
    assert tokens.refresh_token.get_secret_value() not in shown


def test_two_portals_tokens_read_and_write_only_their_own_records(fake, portal, url, clock):
    first, second = fake, fake.portal(OTHER)
    mine = add_deal(first, name="First's deal")["deal"]
    theirs = add_deal(second, name="Second's deal")["deal"]
    client_a = sdk(url, install(fake, portal, PORTAL_ID, clock))
    client_b = sdk(url, install(fake, portal, OTHER, clock))

    assert (
        client_a.crm.deals.basic_api.get_by_id(mine, properties=["dealname"]).properties["dealname"]
        == "First's deal"
    )
    assert (
        client_b.crm.deals.basic_api.get_by_id(theirs, properties=["dealname"]).properties["dealname"]
        == "Second's deal"
    )
    for client, foreign in ((client_a, theirs), (client_b, mine)):
        with pytest.raises(DealsApiException) as missing:
            client.crm.deals.basic_api.get_by_id(foreign)
        assert missing.value.status == 404

    task = SimplePublicObjectInputForCreate(
        properties={"hs_timestamp": "1798707600000", "hs_task_subject": "Call them"}, associations=[]
    )
    created = client_b.crm.objects.tasks.basic_api.create(task)
    assert [r.id for r in second.records("tasks")] == [created.id]
    assert first.records("tasks") == []
    with pytest.raises(TasksApiException) as missing:
        client_a.crm.objects.tasks.basic_api.get_by_id(created.id)
    assert missing.value.status == 404


def test_the_private_app_token_still_reaches_the_first_portal_alone(fake, url):
    theirs = add_deal(fake.portal(OTHER))["deal"]
    mine = add_deal(fake, name="Mine")["deal"]
    client = HubSpot(access_token=TOKEN, host=url, retry=Retry(total=0))
    assert (
        client.crm.deals.basic_api.get_by_id(mine, properties=["dealname"]).properties["dealname"] == "Mine"
    )
    with pytest.raises(DealsApiException) as missing:
        client.crm.deals.basic_api.get_by_id(theirs)
    assert missing.value.status == 404


def test_an_access_token_is_refreshed_before_it_expires_and_the_expired_one_is_refused(
    fake, portal, url, clock
):
    deal = add_deal(fake.portal(OTHER))["deal"]
    tokens = install(fake, portal, OTHER, clock)
    assert not tokens.expiring(clock())
    clock.advance(minutes=26)
    assert tokens.expiring(clock())  # within five minutes of HubSpot's expires_in: refresh now
    fresh = oauth.refresh(portal, tokens.refresh_token, portal_id=OTHER, clock=clock)
    assert fake.refresh_calls == 1
    assert fresh.portal_id == OTHER and fresh.expires_at == clock() + timedelta(minutes=30)
    assert fresh.refresh_token == tokens.refresh_token  # HubSpot keeps the refresh token
    assert fresh.access_token != tokens.access_token

    clock.advance(minutes=5)
    with pytest.raises(DealsApiException) as expired:
        sdk(url, tokens).crm.deals.basic_api.get_by_id(deal)
    assert expired.value.status == 401 and "EXPIRED_AUTHENTICATION" in expired.value.body
    assert sdk(url, fresh).crm.deals.basic_api.get_by_id(deal).id == deal


def test_an_access_token_the_test_expires_is_refused_at_once(fake, portal, url, clock):
    deal = add_deal(fake.portal(OTHER))["deal"]
    tokens = install(fake, portal, OTHER, clock)
    fake.expire(tokens.access_token.get_secret_value())
    with pytest.raises(DealsApiException) as expired:
        sdk(url, tokens).crm.deals.basic_api.get_by_id(deal)
    assert expired.value.status == 401


def test_a_refused_code_is_refused_in_hubspots_words_without_any_secret(fake, portal, clock, caplog):
    caplog.set_level(logging.DEBUG)
    code = "na1-not-a-code-hubspot-issued-0123456789"
    with pytest.raises(oauth.Refused) as refused:
        oauth.exchange_code(portal, code, REDIRECT_URI, clock=clock)
    assert refused.value.status == 400
    assert refused.value.detail["status"] == "BAD_AUTH_CODE"
    shown = str(refused.value) + repr(refused.value.detail) + caplog.text
    assert code not in shown and CLIENT_SECRET not in shown


def test_a_code_works_once(fake, portal, clock):
    code = fake.authorize(OTHER)
    oauth.exchange_code(portal, code, REDIRECT_URI, clock=clock)
    with pytest.raises(oauth.Refused, match="BAD_AUTH_CODE"):
        oauth.exchange_code(portal, code, REDIRECT_URI, clock=clock)


def test_an_expired_code_is_refused(fake, portal, clock):
    code = fake.authorize(OTHER)
    clock.advance(minutes=11)
    with pytest.raises(oauth.Refused, match="BAD_AUTH_CODE"):
        oauth.exchange_code(portal, code, REDIRECT_URI, clock=clock)


def test_a_redirect_uri_other_than_the_codes_is_the_apps_configuration_not_a_refused_grant(
    fake, portal, clock
):
    code = fake.authorize(OTHER)
    with pytest.raises(CrmPermanent, match="BAD_REDIRECT_URI") as wrong:
        oauth.exchange_code(portal, code, "https://elsewhere.example/callback", clock=clock)
    assert not isinstance(wrong.value, oauth.Refused)
    assert "HUBSPOT_CLIENT_ID" in str(wrong.value)
    assert oauth.exchange_code(portal, code, REDIRECT_URI, clock=clock).portal_id == OTHER


def test_a_wrong_client_secret_is_the_apps_configuration_not_a_refused_grant(fake, url, clock):
    wrong = HubSpotSettings.of(load_settings(**oauth_overrides(url, HUBSPOT_CLIENT_SECRET="x" * 36)))
    with pytest.raises(CrmPermanent, match="BAD_CLIENT_ID") as refused:
        oauth.exchange_code(wrong, fake.authorize(OTHER), REDIRECT_URI, clock=clock)
    assert not isinstance(refused.value, oauth.Refused)
    assert "x" * 36 not in str(refused.value) + repr(refused.value.detail)


def test_a_revoked_install_refuses_its_refresh_and_its_tokens_while_the_other_portal_goes_on(
    fake, portal, url, clock
):
    deal = add_deal(fake.portal(OTHER))["deal"]
    gone, kept = install(fake, portal, OTHER, clock), install(fake, portal, PORTAL_ID, clock)
    fake.revoke(portal_id=OTHER)  # uninstalled from that portal
    with pytest.raises(oauth.Refused, match="BAD_REFRESH_TOKEN") as refused:
        oauth.refresh(portal, gone.refresh_token, portal_id=OTHER, clock=clock)
    assert gone.refresh_token.get_secret_value() not in str(refused.value) + repr(refused.value.detail)
    with pytest.raises(DealsApiException) as unauthorised:
        sdk(url, gone).crm.deals.basic_api.get_by_id(deal)
    assert unauthorised.value.status == 401
    assert oauth.refresh(portal, kept.refresh_token, portal_id=PORTAL_ID, clock=clock).portal_id == PORTAL_ID
    assert fake.refresh_calls == 2


def test_one_revoked_refresh_token_leaves_the_portals_other_install_working(fake, portal, clock):
    first, second = install(fake, portal, OTHER, clock), install(fake, portal, OTHER, clock)
    fake.revoke(first.refresh_token.get_secret_value())
    with pytest.raises(oauth.Refused):
        oauth.refresh(portal, first.refresh_token, portal_id=OTHER, clock=clock)
    assert oauth.refresh(portal, second.refresh_token, portal_id=OTHER, clock=clock).portal_id == OTHER


def test_a_refresh_token_of_another_portal_is_not_taken_for_this_one(fake, portal, clock):
    tokens = install(fake, portal, OTHER, clock)
    with pytest.raises(CrmPermanent, match=f"belongs to portal {OTHER}, not {PORTAL_ID}"):
        oauth.refresh(portal, tokens.refresh_token, portal_id=PORTAL_ID, clock=clock)


@pytest.mark.parametrize(
    ("fault", "says"),
    [(503, "answered 503"), (Fault.TIMEOUT, "answered 504"), (Fault.RESET, "did not answer")],
    ids=["5xx", "timeout", "reset"],
)
def test_a_token_endpoint_that_is_down_or_slow_is_transient_and_nothing_is_used_up(
    fake, portal, clock, fault, says
):
    fake.stall_seconds = 0.05
    tokens = install(fake, portal, OTHER, clock)
    fake.inject(fault, route=TOKEN_ROUTE)
    with pytest.raises(CrmTransient, match=says) as down:
        oauth.refresh(portal, tokens.refresh_token, portal_id=OTHER, clock=clock)
    assert not isinstance(down.value, CrmPermanent)
    assert oauth.refresh(portal, tokens.refresh_token, portal_id=OTHER, clock=clock).portal_id == OTHER


def test_the_token_endpoint_takes_its_parameters_in_the_body_only(fake, url):
    code = fake.authorize(OTHER)
    query = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    answer = requests.post(f"{url}/oauth/v3/token", params=query, timeout=5)
    assert answer.status_code == 400 and answer.json()["category"] == "VALIDATION_ERROR"


def test_without_the_client_id_installs_are_off(url):
    from connector.errors import SettingsInvalid

    settings = HubSpotSettings.of(load_settings(HUBSPOT_API_BASE_URL=url, HUBSPOT_ACCESS_TOKEN=TOKEN))
    assert not settings.installable
    with pytest.raises(SettingsInvalid, match="HUBSPOT_CLIENT_ID"):
        oauth.authorize_url(settings, REDIRECT_URI, "state")
    with pytest.raises(SettingsInvalid, match="HUBSPOT_CLIENT_ID"):
        oauth.refresh(settings, SecretStr("na1-x"), portal_id=PORTAL_ID)


def test_the_adapter_given_a_portals_access_token_reads_that_portals_deal_alone(fake, portal, url, clock):
    from tests.support.hubspot import fake_time_adapter, settings_overrides

    theirs = add_deal(fake.portal(OTHER), name="Second's deal")["deal"]
    mine = add_deal(fake, name="First's deal")["deal"]
    token = install(fake, portal, OTHER, clock).access_token.get_secret_value()
    adapter = fake_time_adapter(load_settings(**settings_overrides(url, HUBSPOT_ACCESS_TOKEN=token)), clock)
    assert adapter.fetch_deal(theirs).name == "Second's deal"
    with pytest.raises(CrmPermanent):
        adapter.fetch_deal(mine)
    assert fake.calls["GET /crm/v3/objects/deals/{id}"] == 0
    assert fake.portal(OTHER).calls["GET /crm/v3/objects/deals/{id}"] >= 1
