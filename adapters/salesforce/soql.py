"""Every SOQL query the adapter sends, built with ``format_soql`` — never string formatting.

Values are quoted by ``format_soql``. Field names cannot be quoted in SOQL, so
the configurable ones (contract type and end, the Task marker field) are
checked against a strict identifier pattern before they are spliced in as
``:literal``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime

from simple_salesforce import format_soql

from adapters.base import SweepWindow
from connector.errors import SettingsInvalid

_FIELD_PATH = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*){0,4}$")

OPPORTUNITY_FIELDS = (
    "Id",
    "Name",
    "StageName",
    "IsClosed",
    "IsWon",
    "Amount",
    "CloseDate",
    "AccountId",
    "OwnerId",
    "ContractId",
    "Account.Name",
    "Account.Website",
    "Owner.Name",
    "Owner.Email",
)
# The primary contact and the other contact roles, in the same query.
CONTACT_ROLES = (
    "SELECT ContactId, IsPrimary, Contact.FirstName, Contact.LastName, Contact.Email "
    "FROM OpportunityContactRoles"
)


def field_path(value: str, variable: str) -> str:
    """``value`` if it is a field name or relationship path (``Contract.EndDate``), else SettingsInvalid."""
    if not _FIELD_PATH.fullmatch(value):  # fullmatch: "$" would let a trailing newline through
        raise SettingsInvalid(f"{variable}: {value!r} is not a Salesforce field name or path")
    return value


def _fields(extra: Sequence[str]) -> str:
    return ", ".join(dict.fromkeys([*OPPORTUNITY_FIELDS, *extra]))


def opportunity(opportunity_id: str, extra: Sequence[str]) -> str:
    """One Opportunity with its Account, Owner, contract fields and contact roles."""
    return format_soql(
        "SELECT {fields:literal}, ({roles:literal}) FROM Opportunity WHERE Id = {id}",
        fields=_fields(extra),
        roles=CONTACT_ROLES,
        id=opportunity_id,
    )


def contracts_ending(end_field: str, window: SweepWindow) -> str:
    """Ids and contract ends of the won Opportunities whose contract ends in ``window``.

    Only won ones: an open renewal Opportunity can point at the same Contract,
    and it is the won deal whose offboarding is due. After a first sweep, only
    those modified since (the Opportunity, or the record holding the end date) or
    new to the window.
    """
    query = format_soql(
        "SELECT Id, {end_field:literal} FROM Opportunity "
        "WHERE {end_field:literal} >= {start} AND {end_field:literal} <= {end} AND IsWon = true",
        end_field=end_field,
        start=window.start,
        end=window.end,
    )
    if window.changed_since is not None:
        query += " AND (" + " OR ".join(_news(end_field, window.changed_since, window.new_from)) + ")"
    return query + format_soql(" ORDER BY {end_field:literal}, Id", end_field=end_field)


def _news(end_field: str, since: datetime, new_from: date | None) -> list[str]:
    """What makes a deal new to a sweep: a modification since ``since``, or an end from ``new_from``."""
    stamps = ["SystemModstamp"]
    holder, _, _ = end_field.rpartition(".")
    if holder:  # the end date lives on a related record (Contract.EndDate): its changes count too
        stamps.append(f"{holder}.SystemModstamp")
    news = [format_soql("{stamp:literal} >= {since}", stamp=stamp, since=since) for stamp in stamps]
    if new_from is not None:
        news.append(format_soql("{end_field:literal} >= {day}", end_field=end_field, day=new_from))
    return news


def tasks_on(record_id: str, relation: str = "WhatId") -> str:
    """The Tasks related to a record, with the Description that may carry our marker.

    ``relation`` is ``WhatId`` (an Opportunity) or ``WhoId`` (a Lead: a Task about
    a Lead has no WhatId). Description is a long text area, which SOQL cannot
    filter on: the markers are found in Python among the record's Tasks (a
    handful per record).
    """
    if relation not in ("WhatId", "WhoId"):
        raise ValueError(f"Tasks are related through WhatId or WhoId, not {relation!r}")
    return format_soql(
        "SELECT Id, Description FROM Task WHERE {relation:literal} = {record_id}",
        relation=relation,
        record_id=record_id,
    )


def tasks_marked(marker_field: str, markers: Sequence[str]) -> str:
    return format_soql(
        "SELECT Id, {field:literal} FROM Task WHERE {field:literal} IN {markers}",
        field=marker_field,
        markers=list(markers),
    )


def notes_on(record_id: str) -> str:
    return format_soql(
        "SELECT ContentDocumentId, ContentDocument.Title FROM ContentDocumentLink "
        "WHERE LinkedEntityId = {id}",
        id=record_id,
    )


def survey_invitation(name: str) -> str:
    return format_soql("SELECT Id FROM SurveyInvitation WHERE Name = {name}", name=name)


def person_by_email(sobject: str, email: str) -> str:
    """A Contact or Lead with this email, the oldest first (the one people already work with)."""
    return format_soql(
        "SELECT Id FROM {sobject:literal} WHERE Email = {email} ORDER BY CreatedDate LIMIT 1",
        sobject=sobject,
        email=email,
    )


def organization() -> str:
    return format_soql("SELECT Id FROM Organization LIMIT 1")


def opportunities(opportunity_ids: Sequence[str], extra: Sequence[str]) -> str:
    """Many Opportunities, each as ``opportunity`` reads one, in one query."""
    return format_soql(
        "SELECT {fields:literal}, ({roles:literal}) FROM Opportunity WHERE Id IN {ids}",
        fields=_fields(extra),
        roles=CONTACT_ROLES,
        ids=list(opportunity_ids),
    )


def tasks_related(what_ids: Sequence[str], who_ids: Sequence[str]) -> str:
    """The Tasks related to any of these Opportunities (WhatId) or Leads (WhoId), with the
    Description that may carry a marker (see ``tasks_on``)."""
    parts = [
        format_soql("{relation:literal} IN {ids}", relation=relation, ids=list(record_ids))
        for relation, record_ids in (("WhatId", what_ids), ("WhoId", who_ids))
        if record_ids
    ]
    return "SELECT Id, Description FROM Task WHERE " + " OR ".join(parts)


def documents_titled(titles: Sequence[str]) -> str:
    """The notes (ContentDocuments) with these titles: where a note an attempt wrote is found,
    linked or not."""
    return format_soql("SELECT Id, Title FROM ContentDocument WHERE Title IN {titles}", titles=list(titles))


def links_of(document_ids: Sequence[str]) -> str:
    return format_soql(
        "SELECT ContentDocumentId, LinkedEntityId FROM ContentDocumentLink WHERE ContentDocumentId IN {ids}",
        ids=list(document_ids),
    )


def survey_invitations(names: Sequence[str]) -> str:
    return format_soql("SELECT Id, Name FROM SurveyInvitation WHERE Name IN {names}", names=list(names))


TASK_STATE_FIELDS = (
    "Id",
    "Status",
    "IsClosed",
    "CompletedDateTime",
    "LastModifiedDate",
    "LastModifiedById",
    "OwnerId",
    "Description",
)


def tasks_by_id(task_ids: Sequence[str], since: datetime | None = None, fresh: Sequence[str] = ()) -> str:
    """Checklist Tasks as they are now; with ``since``, only those modified since then, or
    among ``fresh`` (given a file since then, which does not touch the Task)."""
    query = format_soql(
        "SELECT {fields:literal} FROM Task WHERE Id IN {ids}",
        fields=", ".join(TASK_STATE_FIELDS),
        ids=list(task_ids),
    )
    if since is None:
        return query
    changed = format_soql("LastModifiedDate >= {since}", since=since)
    if fresh:
        changed = "(" + changed + format_soql(" OR Id IN {fresh}", fresh=list(fresh)) + ")"
    return f"{query} AND {changed}"


def files_on(record_ids: Sequence[str]) -> str:
    """The files linked to these records (Salesforce requires the LinkedEntityId filter)."""
    return format_soql(
        "SELECT LinkedEntityId, ContentDocumentId, ContentDocument.Title, SystemModstamp "
        "FROM ContentDocumentLink WHERE LinkedEntityId IN {ids}",
        ids=list(record_ids),
    )


def versions_titled(title: str, record_id: str) -> str:
    """The files with this title first published on this record: where a file an attempt
    uploaded is found."""
    return format_soql(
        "SELECT Id, ContentDocumentId FROM ContentVersion "
        "WHERE Title = {title} AND FirstPublishLocationId = {record_id}",
        title=title,
        record_id=record_id,
    )


def version(version_id: str) -> str:
    return format_soql("SELECT ContentDocumentId FROM ContentVersion WHERE Id = {id}", id=version_id)
