"""The fake org is strict where Salesforce is: tested through its pure ``handle`` core."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.faults import Fault
from tests.support.salesforce import (
    API_VERSION,
    CONSUMER_KEY,
    CONSUMER_SECRET,
    INSTANCE,
    REFRESH_REFUSED,
    FakeSalesforce,
)


@pytest.fixture
def org() -> FakeSalesforce:
    return FakeSalesforce()


def call(
    org: FakeSalesforce, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    url = f"https://{INSTANCE}/services/data/v{API_VERSION}/{path}"
    headers = {"Authorization": f"Bearer {token or org.access_token}"}
    status, answer_headers, answer = org.handle(
        method, url, headers, json.dumps(body).encode() if body else None
    )
    assert answer_headers["Sforce-Limit-Info"].startswith("api-usage=")  # on every answer, refusals too
    return status, json.loads(answer) if answer else None


def soql(org: FakeSalesforce, text: str) -> tuple[int, Any]:
    from urllib.parse import quote

    return call(org, "GET", f"query?q={quote(text)}")


def task(org: FakeSalesforce, **fields: Any) -> dict[str, Any]:
    return {
        "attributes": {"type": "Task"},
        "Subject": "s",
        "WhatId": org.add_opportunity().opportunity,
        **fields,
    }


def test_a_wrong_token_is_401_invalid_session_id(org):
    assert call(org, "GET", "limits", token="nope") == (
        401,
        [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID", "fields": []}],
    )


def test_usage_counts_every_call_and_refuses_past_the_allocation(org):
    org.set_usage(99_999, 100_000)
    assert call(org, "GET", "limits")[0] == 200
    status, errors = call(org, "GET", "limits")
    assert (status, errors[0]["errorCode"]) == (403, "REQUEST_LIMIT_EXCEEDED")


def test_collections_take_at_most_200_records(org):
    status, errors = call(
        org, "POST", "composite/sobjects", {"allOrNone": True, "records": [task(org)] * 201}
    )
    assert (status, errors[0]["errorCode"]) == (400, "EXCEEDED_ID_LIMIT")
    assert org.records("Task") == []


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"Status": "Done-ish"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "Status"),
        ({"Priority": None}, "REQUIRED_FIELD_MISSING", "Priority"),
        ({"Subject": "x" * 256}, "STRING_TOO_LONG", "Subject"),
        ({"ActivityDate": "01/12/2026"}, "INVALID_TYPE_ON_FIELD_IN_RECORD", "ActivityDate"),
        ({"WhoId": "not-an-id"}, "MALFORMED_ID", "WhoId"),
        ({"OwnerId": "0055g0000000999AAA"}, "INVALID_CROSS_REFERENCE_KEY", "OwnerId"),
        ({"Colour__c": "red"}, "INVALID_FIELD", "Colour__c"),
        ({"Id": "00T5g0000000999AAA"}, "INVALID_FIELD_FOR_INSERT_UPDATE", "Id"),
    ],
)
def test_records_are_checked_like_a_real_org_and_all_or_none_rolls_back(org, fields, code, field):
    status, results = call(
        org, "POST", "composite/sobjects", {"allOrNone": True, "records": [task(org), task(org, **fields)]}
    )
    assert status == 200  # collections report per record
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert (results[1]["errors"][0]["statusCode"], results[1]["errors"][0]["fields"]) == (code, [field])
    assert org.records("Task") == []


def test_required_fields_are_required(org):
    status, errors = call(org, "POST", "sobjects/Opportunity", {"Name": "No stage"})
    assert (status, errors[0]["errorCode"], errors[0]["fields"]) == (
        400,
        "REQUIRED_FIELD_MISSING",
        ["StageName", "CloseDate"],
    )


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("SELECT Id FROM Lead WHERE LastName = 'O'Brien'", "MALFORMED_QUERY"),
        ("SELECT Id FROM Lead WHERE LastName = 'x\\q'", "MALFORMED_QUERY"),
        ("SELECT Id FROM Opportunity WHERE CloseDate = '2026-12-01'", "INVALID_QUERY_FILTER_OPERATOR"),
        ("SELECT Id FROM Opportunity WHERE IsWon = 'true'", "INVALID_QUERY_FILTER_OPERATOR"),
        ("SELECT Id FROM Opportunity WHERE Id = 'abc'", "INVALID_QUERY_FILTER_OPERATOR"),
        ("SELECT Id FROM Task WHERE Description LIKE '%x%'", "INVALID_FIELD"),
        ("SELECT Nope FROM Opportunity", "INVALID_FIELD"),
        ("SELECT Id FROM Nope", "INVALID_TYPE"),
        ("SELECT Id FROM ContentDocumentLink", "MALFORMED_QUERY"),
        ("SELECT Id, (SELECT Id FROM Nope) FROM Opportunity", "INVALID_TYPE"),
    ],
)
def test_soql_is_refused_where_salesforce_refuses_it(org, text, code):
    status, errors = soql(org, text)
    assert (status, errors[0]["errorCode"]) == (400, code)


def test_soql_understands_the_adapters_queries(org):
    seed = org.add_opportunity(contract_end="2026-12-10")
    org.add_opportunity("Later", contract_end="2027-06-01")
    status, answer = soql(
        org,
        "SELECT Id, Account.Name, Contract.EndDate, (SELECT ContactId, IsPrimary FROM "
        "OpportunityContactRoles) FROM Opportunity WHERE Contract.EndDate = NEXT_N_DAYS:30 "
        "AND IsWon = true ORDER BY Contract.EndDate DESC, Id",
    )
    assert status == 200
    (record,) = answer["records"]
    assert record["Id"] == seed.opportunity
    assert record["Account"]["Name"] == "Acme Corp" and record["Contract"]["EndDate"] == "2026-12-10"
    assert record["OpportunityContactRoles"]["records"][0]["ContactId"] == seed.contacts[0]


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (Fault.TRANSIENT, 503, "SERVER_UNAVAILABLE"),
        (Fault.RATE_LIMITED, 403, "REQUEST_LIMIT_EXCEEDED"),
        (Fault.PERMANENT, 400, "FIELD_CUSTOM_VALIDATION_EXCEPTION"),
    ],
)
def test_injected_errors_happen_before_any_work(org, fault, status, code):
    org.inject(fault, match="POST composite/sobjects")
    status_seen, errors = call(org, "POST", "composite/sobjects", {"allOrNone": True, "records": [task(org)]})
    assert (status_seen, errors[0]["errorCode"]) == (status, code)
    assert org.records("Task") == []


@pytest.mark.parametrize("fault", [Fault.RESET, Fault.TIMEOUT])
def test_a_fault_salesforce_cannot_play_is_refused(org, fault):
    with pytest.raises(ValueError, match=str(fault)):
        org.inject(fault)


def test_a_dropped_reply_still_does_the_work(org):
    org.inject(Fault.LOST_REPLY, match="POST composite/sobjects")
    url = f"https://{INSTANCE}/services/data/v{API_VERSION}/composite/sobjects"
    body = json.dumps({"allOrNone": True, "records": [task(org)]}).encode()
    assert org.transport("POST", url, {"Authorization": f"Bearer {org.access_token}"}, body) is None
    assert len(org.records("Task")) == 1


# --- the OAuth token endpoint, sessions and guest invitations ------------------------------------


def token_call(org: FakeSalesforce, form: dict[str, str], *, as_json: bool = False) -> tuple[int, Any]:
    from urllib.parse import urlencode

    body = json.dumps(form) if as_json else urlencode(form)
    content_type = "application/json" if as_json else "application/x-www-form-urlencoded"
    status, _, answer = org.handle(
        "POST", "https://login.salesforce.com/services/oauth2/token", {"Content-Type": content_type}, body
    )
    return status, json.loads(answer)


def refresh_form(token: str, **extra: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "client_id": CONSUMER_KEY, "refresh_token": token, **extra}


def test_a_refresh_token_buys_a_new_session_and_ends_the_old_one(org):
    old = org.access_token
    status, answer = token_call(org, refresh_form(org.issue_refresh_token(), client_secret=CONSUMER_SECRET))
    assert status == 200 and answer["instance_url"] == f"https://{INSTANCE}"
    assert answer["access_token"] != old and "refresh_token" not in answer
    assert call(org, "GET", "limits", token=old)[0] == 401
    assert call(org, "GET", "limits", token=answer["access_token"])[0] == 200


@pytest.mark.parametrize(
    ("form", "as_json", "error"),
    [
        (refresh_form("5Aep861unknown"), False, REFRESH_REFUSED),
        (refresh_form("{issued}", client_secret="wrong"), False, {"error": "invalid_client"}),
        (refresh_form("{issued}"), True, {"error": "unsupported_grant_type"}),
    ],
    ids=["unknown-token", "wrong-secret", "json-body"],
)
def test_the_token_endpoint_refuses_what_salesforce_refuses(org, form, as_json, error):
    issued = org.issue_refresh_token()
    form = {k: v.replace("{issued}", issued) for k, v in form.items()}
    before = org.access_token
    status, answer = token_call(org, form, as_json=as_json)
    assert status == 400 and error.items() <= answer.items()
    assert org.access_token == before and org.logins == 0


def test_revoked_refresh_tokens_and_expired_sessions_stay_refused(org):
    token = org.issue_refresh_token()
    org.revoke_refresh_tokens()
    assert token_call(org, refresh_form(token)) == (400, REFRESH_REFUSED)
    org.inject(Fault.SESSION_EXPIRED, match="GET limits")
    session = org.access_token
    assert call(org, "GET", "limits", token=session)[0] == 200  # answered, then the session ends
    assert call(org, "GET", "limits", token=session)[0] == 401


def test_a_guest_survey_invitation_needs_its_site(org):
    seed = org.add_opportunity()
    invitation = {
        "Name": "Exit",
        "SurveyId": org.add_survey(),
        "ParticipantId": seed.contacts[0],
        "OptionsAllowGuestUserResponse": True,
    }
    status, errors = call(org, "POST", "sobjects/SurveyInvitation", invitation)
    assert (status, errors[0]["errorCode"], errors[0]["fields"]) == (
        400,
        "FIELD_INTEGRITY_EXCEPTION",
        ["CommunityId"],
    )
    status, created = call(
        org, "POST", "sobjects/SurveyInvitation", invitation | {"CommunityId": org.add_community()}
    )
    assert status == 201 and created["success"]
