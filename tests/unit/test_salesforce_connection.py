"""Auth modes, one re-login on an expired session, errors translated, the API budget, no secrets logged."""

from __future__ import annotations

import logging
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
from connector.errors import CrmPermanent, CrmRateLimited, CrmTransient, SettingsInvalid
from tests.conftest import make_settings
from tests.fakes.salesforce import (
    CONSUMER_KEY,
    CONSUMER_SECRET,
    PASSWORD,
    SECURITY_TOKEN,
    USERNAME,
    FakeSalesforce,
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
        (session_settings(org), "session", False),
        (jwt, "jwt", True),
        (CLIENT_MODE, "client_credentials", True),
        (PASSWORD_MODE, "password", True),
    ]
    for values, mode, renewable in cases:
        chosen = auth.choose(settings(tmp_path, **values), "59.0")
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
    assert org.logins == 0


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
    org.fail(503)
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
        (sdk_error(SalesforceGeneralError, 503, "SERVER_UNAVAILABLE"), CrmTransient),
        (sdk_error(SalesforceGeneralError, 500, "UNKNOWN_EXCEPTION"), CrmTransient),
        (sdk_error(SalesforceGeneralError, 409, "CONFLICT"), CrmPermanent),
        (sdk_error(SalesforceMalformedRequest, 400, "UNABLE_TO_LOCK_ROW"), CrmTransient),
        (requests.ConnectionError("reset"), CrmTransient),
        (requests.ReadTimeout("slow"), CrmTransient),
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
    org.limit_exceeded()
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
    org.drop_reply()
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
