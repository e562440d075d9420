"""Creating tasks and notes once, though HubSpot has no idempotency header.

Every record an action writes carries a marker of the action's idempotency key
(``records.marked``). A first attempt writes without looking: nothing can be there yet, and
HubSpot allows few searches a second. Only when an earlier attempt's outcome is unknown does
a CONTAINS_TOKEN search find what it created, and only the rest is created:

- this process lost the answer of an attempt (5xx, timeout, dropped connection: ``_unsure``);
  HubSpot's search index trails its writes by a few seconds, so a search that finds nothing
  right after is not trusted: the caller is asked to come back later (CrmTransient) rather
  than risk writing twice;
- the worker says so (``outcome_unknown``): an attempt in another process, or an earlier
  claim, may have written until ``since`` (its worker died, or its call timed out). The next
  search for that key first waits until the index lag has passed since then.

Many actions' records go out together (``create_many``): one search covers up to five unsure
keys, and one batch/create call up to 100 records of several actions, each action's records
always in the same call, so HubSpot's refusal of one record (it refuses the whole call) is
narrowed down by splitting the call (``batching.isolate``) and fails only its own action,
which has then written nothing. Created records are told apart by their markers, never by
their place in the answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from adapters.hubspot import records
from adapters.hubspot.api import BATCH_LIMIT, HubSpotApi, chunks
from adapters.hubspot.batching import isolate, pack
from adapters.hubspot.errors import OutcomeUnknown
from connector.clock import Clock, utcnow
from connector.errors import CrmError, CrmTransient

INDEX_LAG_SECONDS = 20.0  # how long HubSpot's search may miss a record just written
BODY = {"tasks": "hs_task_body", "notes": "hs_note_body"}  # where the marker goes
SEARCH_GROUPS = 5  # filterGroups per search request (HubSpot's limit): one unsure key each
# How long an unsure key that was never searched for is remembered: far longer than a claimed
# batch takes to write (its lease is renewed meanwhile), so no key is forgotten before its write.
FORGET_AFTER = timedelta(hours=1)

Job = tuple[str, list[dict[str, Any]]]  # an action's idempotency key and its records' inputs
Outcome = list[str] | CrmError  # the records' ids in order, or what this action alone met


class CreateOnce:
    def __init__(
        self,
        api: HubSpotApi,
        *,
        lag_seconds: float = INDEX_LAG_SECONDS,
        clock: Clock = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.lag_seconds = lag_seconds
        self.clock = clock
        self._sleep = sleep
        self._unsure: dict[str, float] = {}  # idempotency key → when an attempt's outcome was lost
        self._settles: dict[str, datetime] = {}  # idempotency key → when an earlier attempt's writes show
        # The worker writes several groups at once, each in a thread of its own, through this one
        # object: the pruning of _settles must not drop a key another thread has just added.
        self._settles_lock = threading.Lock()

    def outcome_unknown(self, key: str, since: datetime) -> None:
        """An earlier attempt of ``key`` (in any process) may have written until ``since``: the
        next write of ``key`` searches first, after the index lag has passed since then."""
        # A key stays unsure until it is searched for, however long ago its lag ended: a dead
        # worker's lease often ran out well before the next claim. Only keys never searched for
        # (a property update's) are forgotten, once they are long settled.
        forget_before = self.clock() - FORGET_AFTER
        with self._settles_lock:
            for forgotten in [k for k, at in self._settles.items() if at <= forget_before]:
                del self._settles[forgotten]
            self._settles[key] = since + timedelta(seconds=self.lag_seconds)

    def unsure(self, key: str) -> bool:
        """Whether an earlier attempt of ``key`` may have written: only then is it searched for."""
        return key in self._settles or key in self._unsure

    def lost(self, key: str) -> None:
        """This process lost the answer of a write of ``key`` that is not a record created here
        (the offboarding record's file upload): the next attempt looks before writing again."""
        self._unsure.setdefault(key, self.api.limits.now())

    def too_soon(self, key: str) -> bool:
        """Whether a search for ``key`` could still miss what a lost attempt wrote (the index lag)."""
        return self._too_soon(key)

    def create(self, object_type: str, inputs: list[dict[str, Any]], key: str) -> list[str]:
        """Create what no earlier attempt of ``key`` did; every id, in order."""
        outcome = self.create_many(object_type, [(key, inputs)])[key]
        if isinstance(outcome, CrmError):
            raise outcome
        return outcome

    def create_many(
        self, object_type: str, jobs: Sequence[Job], found: dict[str, dict[int, str]] | None = None
    ) -> dict[str, Outcome]:
        """Each action's ids (or error), by key; the records of many actions in few calls.

        ``found``: what a search the caller made already found (else unsure keys are searched).
        """
        if found is None:
            found = self.existing_many(object_type, [key for key, _ in jobs if self.unsure(key)])
        outcomes: dict[str, Outcome] = {}
        missing: list[tuple[str, list[int]]] = []
        for key, inputs in jobs:
            ids = found.get(key, {})
            wanted = [n for n in range(len(inputs)) if n not in ids]
            if not wanted:
                outcomes[key] = [ids[n] for n in range(len(inputs))]
                self._unsure.pop(key, None)
            elif self._too_soon(key):
                outcomes[key] = CrmTransient(
                    "an earlier attempt may have written these; waiting for HubSpot's search index "
                    "to show them before writing again"
                )
            else:
                missing.append((key, wanted))
        inputs_of = {key: inputs for key, inputs in jobs}
        for batch in pack(missing, size=lambda job: len(job[1]), limit=BATCH_LIMIT):
            created = self._create(object_type, inputs_of, batch)
            for key, _wanted in batch:
                outcome = outcomes[key] = _ids(key, len(inputs_of[key]), found.get(key, {}), created.get(key))
                if isinstance(outcome, OutcomeUnknown):
                    self._unsure.setdefault(key, self.api.limits.now())
                elif not isinstance(outcome, CrmError):
                    self._unsure.pop(key, None)
        return outcomes

    def existing(self, object_type: str, key: str) -> dict[int, str]:
        """What earlier attempts of ``key`` created, by position."""
        return self.existing_many(object_type, [key]).get(key, {})

    def existing_many(self, object_type: str, keys: Sequence[str]) -> dict[str, dict[int, str]]:
        """What earlier attempts of each key created, by position: one search per five keys."""
        if not keys:
            return {}
        self._wait_for_index(keys)
        body = BODY[object_type]
        by_token = {records.token(key): key for key in keys}
        found: dict[str, dict[int, str]] = {}
        for group in chunks(list(by_token), SEARCH_GROUPS):
            filters = [[{"property_name": body, "operator": "CONTAINS_TOKEN", "value": t}] for t in group]
            for record in self.api.search_any(object_type, filters, [body]):
                for token, position in records.markers((record.properties or {}).get(body)):
                    if token in by_token:
                        found.setdefault(by_token[token], {}).setdefault(position, str(record.id))
        return found

    def _wait_for_index(self, keys: Iterable[str]) -> None:
        """Wait out the index lag after earlier attempts of ``keys``, so the search sees what they wrote.

        Waiting here, not in the queue: the worker renews the actions' leases meanwhile, and a
        back-off in the queue would cost an attempt and far longer than the lag.
        """
        with self._settles_lock:
            settles = [at for key in keys if (at := self._settles.pop(key, None)) is not None]
        if not settles:
            return
        wait = (max(settles) - self.clock()).total_seconds()
        if wait > 0:
            self._sleep(wait)

    def _too_soon(self, key: str) -> bool:
        since = self._unsure.get(key)
        return since is not None and self.api.limits.now() - since < self.lag_seconds

    def _create(
        self, object_type: str, inputs_of: dict[str, list[dict[str, Any]]], batch: list[tuple[str, list[int]]]
    ) -> dict[str, dict[int, str] | CrmError]:
        """Create one packed batch; a record HubSpot refuses fails its own action alone."""
        if len(batch) == 1 and len(batch[0][1]) > BATCH_LIMIT:
            return {batch[0][0]: self._create_large(object_type, inputs_of, batch[0])}

        def call(part: list[tuple[str, list[int]]]) -> dict[str, dict[int, str]]:
            sent = [inputs_of[key][n] for key, wanted in part for n in wanted]
            try:
                answer = self.api.create_batch(object_type, sent)
            except OutcomeUnknown:
                now = self.api.limits.now()
                self._unsure.update((key, now) for key, _ in part)
                raise
            return _by_marker(object_type, answer, [key for key, _ in part])

        return isolate(call, batch, key=lambda job: job[0])

    def _create_large(
        self, object_type: str, inputs_of: dict[str, list[dict[str, Any]]], job: tuple[str, list[int]]
    ) -> dict[int, str] | CrmError:
        """An action of more than 100 records, in several calls: once some are written, a later
        failure leaves the outcome unknown, so the next attempt looks for what is there."""
        key, wanted = job
        ids: dict[int, str] = {}
        for part in chunks(wanted, BATCH_LIMIT):
            try:
                answer = self.api.create_batch(object_type, [inputs_of[key][n] for n in part])
            except CrmError as exc:
                if isinstance(exc, OutcomeUnknown) or ids:
                    self._unsure[key] = self.api.limits.now()
                if ids and not isinstance(exc, OutcomeUnknown):
                    return OutcomeUnknown(f"{exc} (after {len(ids)} of the records were written)")
                return exc
            ids.update(_by_marker(object_type, answer, [key]).get(key, {}))
        return ids


def _by_marker(object_type: str, answer: list[Any], keys: list[str]) -> dict[str, dict[int, str]]:
    """The created records by action and position, read from their markers (HubSpot does not
    promise the input order in a batch answer)."""
    by_token = {records.token(key): key for key in keys}
    found: dict[str, dict[int, str]] = {}
    for record in answer:
        for token, position in records.markers((record.properties or {}).get(BODY[object_type])):
            if token in by_token:
                found.setdefault(by_token[token], {})[position] = str(record.id)
    return found


def _ids(key: str, count: int, found: dict[int, str], created: dict[int, str] | CrmError | None) -> Outcome:
    if isinstance(created, CrmError):
        return created
    ids = {**found, **(created or {})}
    if len(ids) < count:  # written, but the answer does not say which record is which
        return OutcomeUnknown(
            f"HubSpot created {len(created or {})} record(s) for {records.token(key)} but its answer "
            "did not name them all; the next attempt finds them by their markers"
        )
    return [ids[n] for n in range(count)]
