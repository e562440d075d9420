"""Auth modes, one re-login on an expired session, errors translated, the API budget, no secrets logged."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import responses
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from adapters.salesforce import auth, errors
from adapters.salesforce.adapter import SalesforceAdapter
from adapters.salesforce.budget import STALE_AFTER_SECONDS, ApiBudget
from connector.errors import CrmPermanent, CrmRateLimited, CrmTransient, OutcomeUnknown, SettingsInvalid
from tests.support.faults import Fault
from tests.support.helpers import make_settings
from tests.support.salesforce import (
    CONSUMER_KEY,
    CONSUMER_SECRET,
    PASSWORD,
    REFRESH_REFUSED,
    SECURITY_TOKEN,
    USERNAME,
    FakeSalesforce,
    refresh_settings,
    session_settings,
)


@pytest.fixture
def org() -> FakeSalesforce:
    fake = FakeSalesforce()
    fake.add_opportunity()
    return fake


@pytest.fixture
def http(org):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        org.install(mock)
        yield mock


def settings(tmp_path: Any, **values: Any) -> Any:
    return make_settings(f"sqlite:///{tmp_path}/unused.db", **values)


def adapter(tmp_path: Any, **values: Any) -> SalesforceAdapter:
    return SalesforceAdapter.from_settings(settings(tmp_path, **values))


def private_key(tmp_path: Any) -> tuple[Any, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "server.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, public


PASSWORD_MODE = {
    "SALESFORCE_USERNAME": USERNAME,
    "SALESFORCE_PASSWORD": PASSWORD,
    "SALESFORCE_SECURITY_TOKEN": SECURITY_TOKEN,
}
CLIENT_MODE = {
    "SALESFORCE_CONSUMER_KEY": CONSUMER_KEY,
    "SALESFORCE_CONSUMER_SECRET": CONSUMER_SECRET,
    "SALESFORCE_DOMAIN": "acme.my",
}


# --- which auth mode -------------------------------------------------------------


def test_each_mode_is_chosen_from_the_settings_present(org, tmp_path):
    key_file, _ = private_key(tmp_path)
    jwt = {
        "SALESFORCE_CONSUMER_KEY": CONSUMER_KEY,
        "SALESFORCE_PRIVATE_KEY_FILE": str(key_file),
        "SALESFORCE_USERNAME": USERNAME,
    }
    cases = [
        (refresh_settings(org), "refresh_token", True),
        (session_settings(org), "session", False),
        (jwt, "jwt", True),
        (CLIENT_MODE, "client_credentials", True),
        (PASSWORD_MODE, "password", True),
    ]
    for values, mode, renewable in cases:
        chosen = auth.choose(settings(tmp_path, **values).crm("salesforce"), "59.0")
        assert (chosen.mode, chosen.renewable) == (mode, renewable)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"SALESFORCE_INSTANCE_URL": "https://acme.my.salesforce.com"}, "half configured"),
        ({"SALESFORCE_USERNAME": USERNAME}, "half configured"),
        ({**CLIENT_MODE, "SALESFORCE_DOMAIN": "login"}, "My Domain"),
        (
            {
                "SALESFORCE_CONSUMER_KEY": "k",
                "SALESFORCE_PRIVATE_KEY_FILE": "/nope.key",
                "SALESFORCE_USERNAME": "u",
            },
            "no file",
        ),
    ],
    ids=["url-without-token", "user-without-password", "client-credentials-on-login", "missing-key-file"],
)
def test_incomplete_settings_are_refused_at_start_up(tmp_path, values, problem):
    with pytest.raises(SettingsInvalid, match=problem):
        adapter(tmp_path, **values)


def test_nothing_is_called_until_the_adapter_is_used(org, http, tmp_path):
    adapter(tmp_path, **PASSWORD_MODE)
    assert (org.logins, org.calls) == (0, [])


@pytest.mark.parametrize("mode", ["password", "jwt", "client_credentials"])
def test_renewable_modes_log_in_and_log_in_again_once_when_the_session_expires(org, http, tmp_path, mode):
    values = {"password": PASSWORD_MODE, "client_credentials": CLIENT_MODE}.get(mode)
    if mode == "jwt":
        key_file, org.jwt_public_key = private_key(tmp_path)
        values = {
            "SALESFORCE_CONSUMER_KEY": CONSUMER_KEY,
            "SALESFORCE_PRIVATE_KEY_FILE": str(key_file),
            "SALESFORCE_USERNAME": USERNAME,
        }
    sf = adapter(tmp_path, **(values or {}), SALESFORCE_ORG_ID=org.org_id)
    opportunity = next(iter(org.db["Opportunity"]))
    assert sf.fetch_deal(opportunity).id == opportunity
    assert org.logins == 1
    org.expire_sessions()
    assert sf.fetch_deal(opportunity).id == opportunity
    assert org.logins == 2
    assert org.calls == ["GET query", "GET query"]  # the refused call is not counted by the org


def test_a_session_token_cannot_be_renewed_so_expiry_is_permanent(org, http, tmp_path):
    sf = adapter(tmp_path, **session_settings(org))
    org.expire_sessions()
    with pytest.raises(CrmPermanent, match="INVALID_SESSION_ID") as refused:
        sf.fetch_deal(next(iter(org.db["Opportunity"])))
    assert refused.value.status == 401
    assert "SALESFORCE_ACCESS_TOKEN) cannot be renewed: set SALESFORCE_REFRESH_TOKEN" in str(refused.value)
    assert org.logins == 0


# --- the OAuth refresh-token flow ------------------------------------------------------


def test_the_refresh_token_flow_is_preferred_when_its_settings_are_present(org, tmp_path):
    values = {**PASSWORD_MODE, **session_settings(org), **refresh_settings(org)}
    assert auth.choose(settings(tmp_path, **values).crm("salesforce"), "59.0").mode == "refresh_token"


def test_a_refresh_token_logs_in_and_renews_an_expired_session(org, http, tmp_path):
    sf = adapter(tmp_path, **refresh_settings(org))
    opportunity = next(iter(org.db["Opportunity"]))
    assert sf.fetch_deal(opportunity).id == opportunity
    first = org.access_token
    org.expire_sessions()
    assert sf.fetch_deal(opportunity).id == opportunity
    assert org.logins == 2 and org.access_token != first
    assert org.calls == ["GET query", "GET query"]


def test_a_given_access_token_is_used_first_then_renewed_through_the_refresh_token(org, http, tmp_path):
    sf = adapter(tmp_path, **{**session_settings(org), **refresh_settings(org)})
    opportunity = next(iter(org.db["Opportunity"]))
    sf.fetch_deal(opportunity)
    assert org.logins == 0  # the given session worked: no token call
    org.expire_sessions()
    sf.fetch_deal(opportunity)
    assert org.logins == 1


def test_threads_sharing_a_connection_log_in_once_and_renew_an_expired_session_once(org, http, tmp_path):
    """The worker's loop and its sweep thread share one adapter: no thread's login undoes another's."""
    sf = adapter(tmp_path, **refresh_settings(org))
    opportunity = next(iter(org.db["Opportunity"]))

    def all_at_once(threads: int = 8) -> list[str]:
        start = threading.Barrier(threads)

        def fetch() -> str:
            start.wait()
            return sf.fetch_deal(opportunity).id

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda _: fetch(), range(threads)))

    assert all_at_once() == [opportunity] * 8
    assert org.logins == 1
    org.expire_sessions()
    assert all_at_once() == [opportunity] * 8
    assert org.logins == 2


def test_a_refused_refresh_is_a_clear_permanent_error_without_the_token(org, http, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    values = refresh_settings(org)
    sf = adapter(tmp_path, **values)
    org.revoke_refresh_tokens()
    with pytest.raises(CrmPermanent) as refused:
        sf.fetch_deal(next(iter(org.db["Opportunity"])))
    message = str(refused.value)
    assert "refresh token was refused (invalid_grant: expired access/refresh token)" in message
    assert "SALESFORCE_REFRESH_TOKEN" in message
    assert refused.value.detail == REFRESH_REFUSED  # Salesforce's own words, nothing else
    shown = message + repr(refused.value.detail) + caplog.text + repr(sf.client.auth)
    for secret in (values["SALESFORCE_REFRESH_TOKEN"], CONSUMER_SECRET):
        assert secret not in shown
    assert org.logins == 0 and org.calls == []


def test_a_wrong_consumer_key_is_refused_with_salesforces_words(org, http, tmp_path):
    sf = adapter(tmp_path, **{**refresh_settings(org), "SALESFORCE_CONSUMER_KEY": "not-our-app"})
    with pytest.raises(CrmPermanent, match="invalid_client"):
        sf.fetch_deal(next(iter(org.db["Opportunity"])))


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ({"status": 503, "body": "down"}, "answered 503"),
        ({"body": requests.ConnectionError("reset")}, r"did not answer \(ConnectionError\)"),
    ],
    ids=["5xx", "connection-reset"],
)
def test_a_token_endpoint_that_is_down_is_transient(org, tmp_path, answer, problem):
    sf = adapter(tmp_path, **refresh_settings(org))
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, "https://login.salesforce.com/services/oauth2/token", **answer)
        with pytest.raises(CrmTransient, match=f"token endpoint {problem}"):
            sf.fetch_deal(next(iter(org.db["Opportunity"])))


def test_a_refresh_token_needs_the_consumer_key(org, tmp_path):
    values = {k: v for k, v in refresh_settings(org).items() if k != "SALESFORCE_CONSUMER_KEY"}
    with pytest.raises(SettingsInvalid, match="SALESFORCE_CONSUMER_KEY"):
        adapter(tmp_path, **values)


def test_a_rotated_refresh_token_is_kept_for_the_next_renewal(org, http, tmp_path):
    org.rotate_refresh_tokens = True  # each refresh answers a new token; the used one stops working
    sf = adapter(tmp_path, **refresh_settings(org))
    opportunity = next(iter(org.db["Opportunity"]))
    sf.fetch_deal(opportunity)
    org.expire_sessions()
    assert sf.fetch_deal(opportunity).id == opportunity
    assert org.logins == 2


def test_password_login_warns_once_that_soap_login_retires(org, http, tmp_path, caplog):
    auth._warn_soap_login_retires.cache_clear()
    caplog.set_level(logging.WARNING, logger="offboard.salesforce")
    for _ in range(2):
        adapter(tmp_path, **PASSWORD_MODE).fetch_deal(next(iter(org.db["Opportunity"])))
    warnings = [r.getMessage() for r in caplog.records if "Summer '27" in r.getMessage()]
    assert len(warnings) == 1 and "SALESFORCE_REFRESH_TOKEN" in warnings[0]


def test_a_session_that_expires_again_right_after_login_is_permanent(org, http, tmp_path, monkeypatch):
    sf = adapter(tmp_path, **PASSWORD_MODE)
    monkeypatch.setattr(org, "_login", lambda: "a-token-the-org-will-not-take")
    with pytest.raises(CrmPermanent, match="INVALID_SESSION_ID"):
        sf.fetch_deal(next(iter(org.db["Opportunity"])))


def test_wrong_credentials_are_permanent_and_never_echo_the_password(org, http, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    sf = adapter(tmp_path, **{**PASSWORD_MODE, "SALESFORCE_PASSWORD": "wrong-password-123"})
    with pytest.raises(CrmPermanent, match=r"login failed: .*INVALID_LOGIN") as refused:
        sf.fetch_deal(next(iter(org.db["Opportunity"])))
    assert "wrong-password-123" not in str(refused.value) + repr(refused.value.detail) + caplog.text


def test_tokens_and_passwords_never_reach_the_logs(org, http, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    sf = adapter(tmp_path, **PASSWORD_MODE)
    opportunity = next(iter(org.db["Opportunity"]))
    sf.fetch_deal(opportunity)
    first_token = org.access_token
    org.expire_sessions()
    sf.fetch_deal(opportunity)
    org.inject(Fault.TRANSIENT)
    with pytest.raises(CrmTransient) as failed:
        sf.fetch_deal(opportunity)
    shown = caplog.text + str(failed.value) + repr(sf.client.auth)
    for secret in (PASSWORD, SECURITY_TOKEN, first_token, org.access_token):
        assert secret not in shown
    assert "logging in again (password auth)" in caplog.text


# --- errors ---------------------------------------------------------------------


def sdk_error(cls: type, status: int, code: str) -> Exception:
    return cls(
        "https://x/services/data/v59.0/y", status, "y", [{"message": "m", "errorCode": code, "fields": ["F"]}]
    )


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (sdk_error(SalesforceMalformedRequest, 400, "MALFORMED_ID"), CrmPermanent),
        (sdk_error(SalesforceResourceNotFound, 404, "NOT_FOUND"), CrmPermanent),
        (sdk_error(SalesforceMoreThanOneRecord, 300, "MULTIPLE_CHOICES"), CrmPermanent),
        (sdk_error(SalesforceRefusedRequest, 403, "INSUFFICIENT_ACCESS"), CrmPermanent),
        (sdk_error(SalesforceRefusedRequest, 403, "REQUEST_LIMIT_EXCEEDED"), CrmRateLimited),
        (sdk_error(SalesforceExpiredSession, 401, "INVALID_SESSION_ID"), CrmPermanent),
        # A 5xx, a reset or a timeout may come after Salesforce applied the request.
        (sdk_error(SalesforceGeneralError, 503, "SERVER_UNAVAILABLE"), OutcomeUnknown),
        (sdk_error(SalesforceGeneralError, 500, "UNKNOWN_EXCEPTION"), OutcomeUnknown),
        (sdk_error(SalesforceGeneralError, 409, "CONFLICT"), CrmPermanent),
        (sdk_error(SalesforceMalformedRequest, 400, "UNABLE_TO_LOCK_ROW"), CrmTransient),
        (requests.ConnectionError("reset"), OutcomeUnknown),
        (requests.ReadTimeout("slow"), OutcomeUnknown),
        (requests.ConnectTimeout("never left"), CrmTransient),
    ],
)
def test_sdk_errors_map_onto_the_port_and_keep_salesforces_words(raised, expected):
    translated = errors.translate(raised)
    assert type(translated) is expected
    if not isinstance(raised, requests.RequestException):
        assert translated.detail == [
            {"message": "m", "errorCode": raised.content[0]["errorCode"], "fields": ["F"]}
        ]


def test_request_limit_exceeded_is_rate_limited_and_waits(org, http, tmp_path):
    org.inject(Fault.RATE_LIMITED)
    with pytest.raises(CrmRateLimited) as limited:
        adapter(tmp_path, **session_settings(org)).fetch_deal(next(iter(org.db["Opportunity"])))
    assert limited.value.retry_after == errors.LIMIT_RETRY_AFTER_SECONDS
    assert limited.value.detail[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_server_errors_and_lost_connections_are_transient(org, http, tmp_path):
    sf = adapter(tmp_path, **session_settings(org))
    opportunity = next(iter(org.db["Opportunity"]))
    org.fail(500, code="UNKNOWN_EXCEPTION")
    with pytest.raises(CrmTransient, match="500"):
        sf.fetch_deal(opportunity)
    org.inject(Fault.LOST_REPLY)
    with pytest.raises(CrmTransient, match="no answer"):
        sf.fetch_deal(opportunity)


# --- the API budget ------------------------------------------------------------------


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_past_the_budget_non_urgent_work_waits_and_under_it_it_goes(org, http, tmp_path):
    sf = adapter(tmp_path, **session_settings(org))
    opportunity = next(iter(org.db["Opportunity"]))
    assert sf.deferral_reason() is None  # nothing read yet
    org.set_usage(84_999, 100_000)
    sf.fetch_deal(opportunity)  # this call makes it 85,000
    assert sf.deferral_reason() == (
        "Salesforce daily API usage 85% (85000/100000) is past the 80% budget; non-urgent work waits"
    )
    org.set_usage(50_000)
    sf.fetch_deal(opportunity)
    assert sf.deferral_reason() is None


def test_the_share_is_a_setting(org, http, tmp_path):
    sf = adapter(tmp_path, **session_settings(org), SALESFORCE_API_BUDGET_SHARE=0.95)
    org.set_usage(90_000, 100_000)
    sf.fetch_deal(next(iter(org.db["Opportunity"])))
    assert sf.deferral_reason() is None


def test_refusals_update_the_budget_too(org, http, tmp_path):
    sf = adapter(tmp_path, **session_settings(org))
    org.set_usage(100_000, 100_000)
    with pytest.raises(CrmRateLimited):
        sf.fetch_deal(next(iter(org.db["Opportunity"])))  # the 100,001st call
    assert "100%" in (sf.deferral_reason() or "")


def test_a_stale_reading_past_the_budget_is_refreshed_before_holding_work_back(org, http, tmp_path):
    sf = adapter(tmp_path, **session_settings(org))
    ticks = Ticks()
    sf.client.budget.clock = ticks
    org.set_usage(89_999, 100_000)
    sf.fetch_deal(next(iter(org.db["Opportunity"])))
    assert sf.deferral_reason() is not None
    org.set_usage(10_000)  # the org's window rolled on while our work waited
    assert sf.deferral_reason() is not None  # fresh enough: no call spent
    assert org.calls == ["GET query"]
    ticks.now += STALE_AFTER_SECONDS + 1
    assert sf.deferral_reason() is None
    assert org.calls == ["GET query", "GET limits"]


def test_the_budget_reads_the_header_as_simple_salesforce_parses_it():
    budget = ApiBudget(share=0.8)
    budget.observe("api-usage=25/5000; per-app-api-usage=17/250(appName=sample-connected-app)")
    assert (budget.used, budget.total, budget.reason()) == (25, 5000, None)
    budget.observe("garbage")
    budget.observe(None)
    assert budget.used == 25
    budget.observe("api-usage=4999/5000")
    assert (
        budget.reason()
        == "Salesforce daily API usage 99.98% (4999/5000) is past the 80% budget; non-urgent work waits"
    )


# --- settings the Salesforce endpoints and surveys need ----------------------------------------


def test_the_outbound_key_must_be_at_least_32_characters(tmp_path):
    with pytest.raises(SettingsInvalid, match=r"SALESFORCE_OUTBOUND_KEY: .*at least 32") as refused:
        settings(tmp_path, SALESFORCE_OUTBOUND_KEY="short-key-0123456789")
    assert "short-key-0123456789" not in str(refused.value)
    empty = settings(tmp_path, SALESFORCE_OUTBOUND_KEY="").crm("salesforce")
    assert empty.outbound_key is None  # empty is unset
    key = "k" * 32
    given = settings(tmp_path, SALESFORCE_OUTBOUND_KEY=key).crm("salesforce")
    assert given.outbound_key.get_secret_value() == key


def test_survey_ids_without_a_community_are_a_settings_error_naming_it(tmp_path):
    with pytest.raises(SettingsInvalid, match=r"SALESFORCE_SURVEY_IDS: .*set SALESFORCE_COMMUNITY_ID"):
        settings(tmp_path, SALESFORCE_SURVEY_IDS={"nps": "0Kd5g0000000001AAA"})
    surveys = {"nps": "0Kd5g0000000001AAA"}
    both = settings(tmp_path, SALESFORCE_SURVEY_IDS=surveys, SALESFORCE_COMMUNITY_ID="0DB5g0000000001AAA")
    assert both.crm("salesforce").community_id == "0DB5g0000000001AAA"
