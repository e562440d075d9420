"""Installing into Salesforce orgs: the web-server flow with PKCE, refreshes, refusals, orgs kept apart.

The adapter's OAuth client and simple-salesforce talk to the fake through ``responses`` (both
speak requests); the fake holds several orgs behind one login host, each on its own instance.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from pydantic import SecretStr
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceExpiredSession

from adapters.salesforce import oauth
from adapters.salesforce.oauth import Pkce, RefreshGrant
from connector.errors import CrmPermanent, CrmTransient, SettingsInvalid
from tests.support.salesforce import (
    CONSUMER_KEY,
    CONSUMER_SECRET,
    INSTANCE,
    ORG_ID,
    REDIRECT_URI,
    FakeSalesforce,
)

LOGIN = "https://login.salesforce.com"
GLOBEX = "00D7g00000Globx"
GLOBEX_INSTANCE = "globex.my.salesforce.com"


@pytest.fixture
def org(clock) -> FakeSalesforce:
    acme = FakeSalesforce(clock=clock)
    acme.add_opportunity("Acme website")
    acme.add_org(GLOBEX, GLOBEX_INSTANCE).add_opportunity("Globex rebrand", account="Globex Corp")
    return acme


@pytest.fixture
def globex(org) -> FakeSalesforce:
    return next(o for o in org.orgs.values() if o is not org)


@pytest.fixture
def http(org):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        org.install(mock)
        yield mock


def install(org: FakeSalesforce, org_id: str | None = None) -> oauth.Session:
    pkce = Pkce.new()
    code = org.authorize(pkce.challenge, org_id=org_id)
    return exchange(code, pkce.verifier)


def exchange(
    code: str, verifier: str, redirect_uri: str = REDIRECT_URI, key: str = CONSUMER_KEY
) -> oauth.Session:
    return oauth.exchange_code(
        LOGIN,
        key,
        SecretStr(CONSUMER_SECRET),
        code=code,
        redirect_uri=redirect_uri,
        code_verifier=verifier,
    )


def client(session: oauth.Session) -> Salesforce:
    return Salesforce(instance=session.instance, session_id=session.access_token.get_secret_value())


def names(sf: Salesforce) -> list[str]:
    return [r["Name"] for r in sf.query("SELECT Id, Name FROM Opportunity")["records"]]


def test_pkce_follows_rfc_7636():
    # RFC 7636, appendix B: the example verifier and its S256 challenge.
    assert oauth.challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )
    pair, other = Pkce.new(), Pkce.new()
    assert re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", pair.verifier)
    assert pair.challenge == oauth.challenge(pair.verifier) and pair.verifier != other.verifier
    assert pair.verifier not in repr(pair)


def test_the_install_link_asks_for_a_code_with_pkce_and_the_org_answers_the_callback(org):
    pkce = Pkce.new()
    link = oauth.authorize_url(LOGIN, CONSUMER_KEY, REDIRECT_URI, "signed-state", pkce.challenge)
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert link.startswith(f"{LOGIN}/services/oauth2/authorize?")
    assert query == {
        "response_type": "code",
        "client_id": CONSUMER_KEY,
        "redirect_uri": REDIRECT_URI,
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
        "state": "signed-state",
        "scope": "api refresh_token",
    }
    callback = urlsplit(org.consent(link, org_id=GLOBEX))
    answered = {k: v[0] for k, v in parse_qs(callback.query).items()}
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == REDIRECT_URI
    assert answered["state"] == "signed-state"
    with pytest.raises(ValueError, match="PKCE"):
        org.consent(link.replace("code_challenge_method=S256", "code_challenge_method=plain"))


def test_a_code_and_its_verifier_become_a_session_in_the_org_that_installed(org, globex, http):
    session = install(org, GLOBEX)
    assert session.org_id == globex.org_id and session.user_id == globex.api_user
    assert session.instance == GLOBEX_INSTANCE and session.instance_url == f"https://{GLOBEX_INSTANCE}"
    assert session.scopes == ("api", "refresh_token")
    shown = repr(session) + str(session)
    for secret in (session.access_token, session.refresh_token):
        assert secret.get_secret_value() not in shown
    assert names(client(session)) == ["Globex rebrand"]


def test_two_orgs_sessions_read_and_write_only_their_own_records(org, globex, http):
    acme, other = client(install(org)), client(install(org, GLOBEX))
    assert names(acme) == ["Acme website"] and names(other) == ["Globex rebrand"]
    theirs = next(iter(globex.db["Opportunity"]))
    created = other.Task.create({"Subject": "Call them", "WhatId": theirs})
    assert [t["Id"] for t in globex.records("Task")] == [created["id"]]
    assert org.records("Task") == []
    mine = acme.session_id
    with pytest.raises(SalesforceExpiredSession):  # acme's session on globex's instance
        Salesforce(instance=GLOBEX_INSTANCE, session_id=mine).query("SELECT Id FROM Opportunity")


def test_the_orgs_own_session_still_works_and_reaches_that_org_alone(org, http):
    install(org, GLOBEX)
    assert names(Salesforce(instance=INSTANCE, session_id=org.access_token)) == ["Acme website"]
    with pytest.raises(SalesforceExpiredSession):
        Salesforce(instance=GLOBEX_INSTANCE, session_id=org.access_token).query("SELECT Id FROM Opportunity")


def test_a_refused_code_is_refused_in_salesforces_words_without_any_secret(org, http, caplog):
    caplog.set_level(logging.DEBUG)
    verifier = Pkce.new().verifier
    with pytest.raises(oauth.Refused) as refused:
        exchange("aPrxNotACodeTheOrgIssued0123456789==", verifier)
    assert refused.value.status == 400
    assert refused.value.detail == {
        "error": "invalid_grant",
        "error_description": "invalid authorization code",
    }
    shown = str(refused.value) + repr(refused.value.detail) + caplog.text
    for secret in ("aPrxNotACodeTheOrgIssued0123456789==", verifier, CONSUMER_SECRET):
        assert secret not in shown


def test_a_code_works_once(org, http):
    pkce = Pkce.new()
    code = org.authorize(pkce.challenge, org_id=GLOBEX)
    exchange(code, pkce.verifier)
    with pytest.raises(oauth.Refused, match="invalid authorization code"):
        exchange(code, pkce.verifier)


def test_an_expired_code_is_refused(org, http, clock):
    pkce = Pkce.new()
    code = org.authorize(pkce.challenge)
    clock.advance(minutes=16)
    with pytest.raises(oauth.Refused, match="expired authorization code"):
        exchange(code, pkce.verifier)


def test_a_wrong_verifier_is_refused_and_the_right_one_still_works(org, http):
    pkce = Pkce.new()
    code = org.authorize(pkce.challenge, org_id=GLOBEX)
    with pytest.raises(oauth.Refused, match="invalid code verifier") as refused:
        exchange(code, Pkce.new().verifier)
    assert refused.value.detail["error"] == "invalid_grant"
    assert exchange(code, pkce.verifier).instance == GLOBEX_INSTANCE


def test_another_redirect_uri_is_the_apps_configuration_not_a_refused_grant(org, http):
    pkce = Pkce.new()
    code = org.authorize(pkce.challenge)
    with pytest.raises(CrmPermanent, match="redirect_uri_mismatch") as wrong:
        exchange(code, pkce.verifier, redirect_uri="https://elsewhere.example/callback")
    assert not isinstance(wrong.value, oauth.Refused)
    assert "callback URL" in str(wrong.value)


def test_a_wrong_consumer_key_is_the_apps_configuration_not_a_refused_grant(org, http):
    pkce = Pkce.new()
    with pytest.raises(CrmPermanent, match="invalid_client_id") as wrong:
        exchange(org.authorize(pkce.challenge), pkce.verifier, key="3MVG9-someone-else")
    assert not isinstance(wrong.value, oauth.Refused)


def test_a_refresh_buys_a_new_session_in_the_same_org_and_is_counted(org, globex, http):
    session = install(org, GLOBEX)
    grant = RefreshGrant(
        LOGIN, CONSUMER_KEY, session.refresh_token, SecretStr(CONSUMER_SECRET), org_id=GLOBEX
    )
    token, host = grant(requests.Session())
    assert host == GLOBEX_INSTANCE and token != session.access_token.get_secret_value()
    assert org.refresh_calls == 1
    assert names(Salesforce(instance=host, session_id=token)) == ["Globex rebrand"]


def test_a_session_ends_at_the_orgs_timeout_or_when_expired_and_a_refresh_renews_it(org, http, clock):
    first, second = install(org, GLOBEX), install(org, GLOBEX)
    org.expire(first.access_token.get_secret_value())
    with pytest.raises(SalesforceExpiredSession):
        names(client(first))
    assert names(client(second)) == ["Globex rebrand"]
    clock.advance(hours=2)
    with pytest.raises(SalesforceExpiredSession):
        names(client(second))
    grant = RefreshGrant(LOGIN, CONSUMER_KEY, second.refresh_token, SecretStr(CONSUMER_SECRET))
    token, host = grant(requests.Session())
    assert names(Salesforce(instance=host, session_id=token)) == ["Globex rebrand"]


def test_a_revoked_refresh_token_is_refused_and_the_other_org_goes_on(org, http):
    gone, kept = install(org, GLOBEX), install(org)
    org.revoke(org_id=GLOBEX)
    grant = RefreshGrant(LOGIN, CONSUMER_KEY, gone.refresh_token, SecretStr(CONSUMER_SECRET))
    with pytest.raises(oauth.Refused, match="expired access/refresh token") as refused:
        grant(requests.Session())
    assert gone.refresh_token.get_secret_value() not in str(refused.value) + repr(refused.value.detail)
    with pytest.raises(SalesforceExpiredSession):  # revoking the token ended its sessions too
        names(client(gone))
    assert names(client(kept)) == ["Acme website"]
    kept_grant = RefreshGrant(LOGIN, CONSUMER_KEY, kept.refresh_token, SecretStr(CONSUMER_SECRET))
    assert kept_grant(requests.Session())[1] == INSTANCE
    assert org.refresh_calls == 2


def test_one_revoked_refresh_token_leaves_the_orgs_other_install_working(org, http):
    first, second = install(org, GLOBEX), install(org, GLOBEX)
    org.revoke(first.refresh_token.get_secret_value())
    with pytest.raises(oauth.Refused):
        RefreshGrant(LOGIN, CONSUMER_KEY, first.refresh_token)(requests.Session())
    assert RefreshGrant(LOGIN, CONSUMER_KEY, second.refresh_token)(requests.Session())[1] == GLOBEX_INSTANCE


def test_a_refresh_token_of_another_org_is_not_taken_for_this_connection(org, http):
    session = install(org, GLOBEX)
    grant = RefreshGrant(LOGIN, CONSUMER_KEY, session.refresh_token, org_id=ORG_ID)
    with pytest.raises(CrmPermanent, match="belongs to org"):
        grant(requests.Session())


def test_a_rotated_refresh_token_is_handed_to_its_keeper_and_the_used_one_ends(org, http):
    org.rotate_refresh_tokens = True
    session = install(org, GLOBEX)
    kept: list[SecretStr] = []
    grant = RefreshGrant(LOGIN, CONSUMER_KEY, session.refresh_token, on_rotate=kept.append)
    grant(requests.Session())
    assert kept == [grant.refresh_token] and grant.refresh_token != session.refresh_token
    with pytest.raises(oauth.Refused):
        RefreshGrant(LOGIN, CONSUMER_KEY, session.refresh_token)(requests.Session())
    assert grant(requests.Session())[1] == GLOBEX_INSTANCE


def test_a_token_endpoint_that_is_down_is_transient(org):
    pkce = Pkce.new()
    code = org.authorize(pkce.challenge)
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, f"{LOGIN}/services/oauth2/token", status=503, body="down")
        with pytest.raises(CrmTransient, match="answered 503"):
            exchange(code, pkce.verifier)
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, f"{LOGIN}/services/oauth2/token", body=requests.ConnectionError("reset"))
        with pytest.raises(CrmTransient, match="did not answer"):
            exchange(code, pkce.verifier)


@pytest.mark.parametrize(
    "identity",
    [
        "https://login.salesforce.com/id/005000000000001AAA/00D000000000001AAA",
        "http://login.salesforce.com/id/00D5g00000Fake1AAA/0055g0000000001AAA",
        "https://login.salesforce.com/id/00D5g00000Fake1AAA",
        "https://login.salesforce.com/id/00D5g00000Fake1AAA/0055g0000000001AAA/more",
        None,
    ],
    ids=["swapped", "http", "no-user", "extra", "missing"],
)
def test_an_identity_url_of_another_shape_is_refused(identity):
    with pytest.raises(CrmPermanent, match="identity URL"):
        oauth.identity(identity)


def test_without_the_consumer_key_installs_are_off():
    with pytest.raises(SettingsInvalid, match="SALESFORCE_CONSUMER_KEY"):
        oauth.authorize_url(LOGIN, None, REDIRECT_URI, "state", Pkce.new().challenge)


def test_the_adapter_given_an_orgs_session_reads_that_orgs_opportunity_alone(org, globex, http, tmp_path):
    from tests.support.adapter_fixtures import adapter_for

    session = install(org, GLOBEX)
    adapter = adapter_for(
        org,
        tmp_path,
        SALESFORCE_INSTANCE_URL=session.instance_url,
        SALESFORCE_ACCESS_TOKEN=session.access_token.get_secret_value(),
        SALESFORCE_ORG_ID=session.org_id,
    )
    theirs, mine = next(iter(globex.db["Opportunity"])), next(iter(org.db["Opportunity"]))
    assert adapter.fetch_deal(theirs).name == "Globex rebrand"
    with pytest.raises(CrmPermanent):
        adapter.fetch_deal(mine)
    assert org.calls == [] and globex.calls
