"""Many actions' writes in HubSpot's batch calls: the ``TaskBatches``, ``NoteBatches``,
``PropertyBatches`` and ``InviteBatches`` capabilities of the HubSpot adapter.

Tasks and notes of many deals go out 100 per batch/create call, each with its inline
associations and its own action's marker, through ``CreateOnce`` (which searches only for
actions whose earlier outcome is unknown). Property updates go 100 per batch/update call
per object type. A survey or referral send is the contact's properties (batch update) and
then a note (batch create). A record HubSpot refuses fails its own action only
(``batching.isolate``); an error that stops a call is every one of its actions' error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from adapters.base import Results, Write
from adapters.hubspot import records
from adapters.hubspot.api import BATCH_LIMIT, HubSpotApi, chunks
from adapters.hubspot.batching import isolate, rounds
from adapters.hubspot.once import CreateOnce, Outcome
from adapters.hubspot.setup import SURVEY_KIND, SURVEY_LINK, SURVEY_REF, SURVEY_SENT_AT
from connector.clock import Clock
from connector.errors import CrmError, CrmPermanent
from connector.models import Invite, NoteSpec, PropertyUpdate, TaskSpec

W = TypeVar("W")
OBJECT_TYPES = {"deal": "deals", "company": "companies", "contact": "contacts"}
SETUP_HINT = "(if a property is missing, run `offboard hubspot setup`)"

# One record's update inside a batch: the write's key, the record's id, its properties.
Change = tuple[str, str, dict[str, str]]


class BatchWriter:
    def __init__(self, api: HubSpotApi, once: CreateOnce, clock: Clock) -> None:
        self.api, self.once, self.clock = api, once, clock

    def tasks(self, writes: Sequence[Write[Sequence[TaskSpec]]]) -> Results[list[str]]:
        self._told(writes)
        jobs = [
            (w.key, [records.task_input(t, w.key, n) for n, t in enumerate(w.item)]) for w in _once(writes)
        ]
        outcomes = self.once.create_many("tasks", jobs)
        return [outcomes[w.key] for w in writes]

    def notes(self, writes: Sequence[Write[NoteSpec]]) -> Results[str]:
        self._told(writes)
        now = self.clock()
        jobs = [
            (w.key, [records.note_input(w.item.body, w.key, now, records.note_targets(w.item))])
            for w in _once(writes)
        ]
        outcomes = self.once.create_many("notes", jobs)
        return [_first(outcomes[w.key]) for w in writes]

    def properties(self, writes: Sequence[Write[PropertyUpdate]]) -> Results[None]:
        """Each update, per object type and 100 per call; a record changed twice, in two calls."""
        done: dict[str, CrmError | None] = {}
        for kind, object_type in OBJECT_TYPES.items():
            changes = [
                (str(n), w.item.object_id, dict(w.item.properties))
                for n, w in enumerate(writes)
                if w.item.object == kind
            ]
            done |= self._update(object_type, changes)
        return [_hinted(done[str(n)]) for n in range(len(writes))]

    def invites(self, writes: Sequence[Write[Invite]]) -> Results[str]:
        """The contact's survey properties (the admin's workflow emails from them), then a note.

        The note is written last, so an earlier attempt whose note is found sent the whole
        invitation; only those attempts whose outcome is unknown are looked for.
        """
        self._told(writes)
        unique = _once(writes)
        found = self.once.existing_many("notes", [w.key for w in unique if self.once.unsure(w.key)])
        sent: dict[str, Outcome] = {w.key: [found[w.key][0]] for w in unique if 0 in found.get(w.key, {})}
        todo = [w for w in unique if w.key not in sent]
        now = self.clock()
        changes = [(w.key, w.item.contact_id, _survey_properties(w.item, w.key, now)) for w in todo]
        updated = self._update("contacts", changes)
        jobs = []
        for w in todo:
            problem = updated[w.key]
            if problem is not None:
                sent[w.key] = problem
            else:
                jobs.append(
                    (w.key, [records.note_input(_note_text(w.item), w.key, now, _note_targets(w.item))])
                )
        sent |= self.once.create_many("notes", jobs, found=found)
        return [_first(sent[w.key]) for w in writes]

    def _update(self, object_type: str, changes: list[Change]) -> dict[str, CrmError | None]:
        """Each change's outcome, by its write's key: per call, each record once, at most 100."""
        done: dict[str, CrmError | None] = {}
        for round_ in rounds(changes, of=lambda change: change[1]):
            for batch in chunks(round_, BATCH_LIMIT):
                done |= isolate(
                    lambda part: self._update_call(object_type, part),
                    batch,
                    key=lambda change: change[0],
                    named=_named_records,
                )
        return done

    def _update_call(self, object_type: str, part: list[Change]) -> dict[str, CrmError | None]:
        refused = self.api.update_batch(object_type, [(object_id, props) for _, object_id, props in part])
        return {key: refused.get(object_id) for key, object_id, _ in part}

    def _told(self, writes: Sequence[Write[Any]]) -> None:
        """Writes whose earlier attempt's outcome is unknown: their keys are looked for first."""
        for write in writes:
            if write.unsure_since is not None:
                self.once.outcome_unknown(write.key, write.unsure_since)


def one(many: Callable[[Sequence[Write[W]]], Results[Any]], write: Write[W]) -> Any:
    """A single write through its batch call: its result, or its error raised."""
    (outcome,) = many([write])
    if isinstance(outcome, CrmError):
        raise outcome
    return outcome


def _once(writes: Sequence[Write[W]]) -> list[Write[W]]:
    """The writes, each key once (the same action twice in one batch writes once)."""
    first: dict[str, Write[W]] = {}
    for write in writes:
        first.setdefault(write.key, write)
    return list(first.values())


def _first(outcome: Outcome) -> str | CrmError:
    return outcome if isinstance(outcome, CrmError) else outcome[0]


def _hinted(outcome: CrmError | None) -> CrmError | None:
    if isinstance(outcome, CrmPermanent) and outcome.status == 400 and SETUP_HINT not in str(outcome):
        return CrmPermanent(f"{outcome} {SETUP_HINT}", status=400, detail=outcome.detail)
    return outcome


def _named_records(error: CrmError, part: list[Change]) -> list[Change]:
    """The changes whose records a refusal names (e.g. "Duplicate IDs found in batch input")."""
    detail = error.detail if isinstance(error.detail, dict) else {}
    ids = {str(i) for i in ((detail.get("context") or {}).get("ids") or [])}
    return [change for change in part if change[1] in ids]


def _survey_properties(invite: Invite, key: str, now: Any) -> dict[str, str]:
    return {
        SURVEY_KIND: invite.kind,
        SURVEY_LINK: invite.link,
        SURVEY_SENT_AT: records.millis(now),
        SURVEY_REF: records.token(key),  # the same on a retry: the workflow does not re-enroll
    }


def _note_text(invite: Invite) -> str:
    what = "referral ask" if invite.kind == "referral" else f"{invite.kind.upper()} survey"
    sender = f" on behalf of {invite.sender}" if invite.sender else ""
    return f"Offboard sent the {what}{sender} to {invite.email or 'the contact'}: {invite.link}"


def _note_targets(invite: Invite) -> dict[str, records.Target]:
    return {"contacts": invite.contact_id, "deals": invite.deal_id}
