"""SDK and urllib3 errors become the port's error tree, with HubSpot's message kept."""

from __future__ import annotations

import json

import pytest
from hubspot.crm.deals import ApiException as DealsApiException
from hubspot.crm.objects.tasks import ApiException as TasksApiException
from hubspot.crm.objects.tasks.exceptions import ApiValueError
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError

from adapters.hubspot.errors import OutcomeUnknown, translate
from connector.errors import CrmPermanent, CrmRateLimited, CrmTransient


def api_error(status: int, body: dict, headers: dict | None = None, kind=DealsApiException):
    exc = kind(status=status, reason="reason")
    exc.body, exc.headers = json.dumps(body), headers or {}
    return exc


@pytest.mark.parametrize(
    ("policy", "headers", "retry_after"),
    [
        ("TEN_SECONDLY_ROLLING", {"X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}, 10.0),
        ("SECONDLY", {}, 1.0),
        ("DAILY", {}, 3600.0),
    ],
)
def test_429_is_rate_limited_for_the_policys_interval(policy, headers, retry_after):
    error = translate(api_error(429, {"errorType": "RATE_LIMIT", "policyName": policy}, headers), "read")
    assert isinstance(error, CrmRateLimited)
    assert error.retry_after == retry_after


def test_400_is_permanent_and_keeps_hubspots_message():
    error = translate(
        api_error(400, {"message": "Property values were not valid"}, kind=TasksApiException), "create tasks"
    )
    assert isinstance(error, CrmPermanent) and error.status == 400
    assert "Property values were not valid" in str(error)


def test_401_and_403_are_permanent_and_say_what_to_fix():
    unauthorized = translate(api_error(401, {"message": "expired"}), "read the deal")
    assert isinstance(unauthorized, CrmPermanent) and "HUBSPOT_ACCESS_TOKEN" in str(unauthorized)
    body = {"errors": [{"context": {"requiredGranularScopes": ["crm.objects.deals.write"]}}]}
    forbidden = translate(api_error(403, body), "update deals 1")
    assert isinstance(forbidden, CrmPermanent) and "crm.objects.deals.write" in str(forbidden)


def test_5xx_may_have_been_applied():
    assert isinstance(translate(api_error(502, {}), "create tasks"), OutcomeUnknown)


def test_network_errors_are_transient_and_only_a_refusal_is_known_unsent():
    refused = NewConnectionError(None, "refused")
    assert type(translate(refused, "read")) is CrmTransient
    assert type(translate(MaxRetryError(None, "/x", reason=refused), "read")) is CrmTransient
    assert isinstance(translate(ProtocolError("Connection aborted."), "create"), OutcomeUnknown)
    assert isinstance(translate(ReadTimeoutError(None, "/x", "read timed out"), "create"), OutcomeUnknown)


def test_a_request_the_sdk_refuses_to_build_is_permanent_and_others_propagate():
    assert isinstance(translate(ApiValueError("missing inputs"), "create tasks"), CrmPermanent)
    with pytest.raises(KeyError):
        translate(KeyError("bug"), "read")
