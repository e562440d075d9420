"""Handle one claimed inbox event: what it means, and what it starts or cancels.

A CRM's own events are interpreted by its adapter (``InboundAdapter``); the generic
schema and the contract-end sweep's events are the core's. A failure goes to
``connector.retry``, whose decision is applied through ``connector.queue``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from adapters.base import CrmAdapter, DealBatches, DealKeeper, InboundAdapter, TaskReader
from connector import queue
from connector.clock import Clock, utcnow
from connector.connections import CONNECTED
from connector.errors import CrmPermanent, Disconnected, PayloadInvalid
from connector.generic import GenericEvent
from connector.models import Deal, DealChange, TaskChange, TaskState
from connector.queue import EventState
from connector.retry import RetryPolicy, Verdict
from connector.settings import Settings
from connector.store import Event, Store
from connector.store.tables import AccountConnection, ChecklistTask
from connector.usecases import checklist, offboarding
from connector.usecases.accounts import account_context
from connector.usecases.offboarding import (
    WAITING,
    Outcome,
    Playbooks,
    closed_too_long_ago,
    unloaded_playbooks,
)
from connector.usecases.performing import adapter_for
from connector.usecases.uow import unit_of_work

log = logging.getLogger("offboard.worker")
UNREAD = object()  # an event whose meaning was not read with others: read it alone


class EventProcessor:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        adapters: Mapping[str, CrmAdapter],
        playbooks: Playbooks,
        *,
        worker_id: str,
        clock: Clock = utcnow,
    ) -> None:
        self.settings, self.store, self.adapters, self.playbooks = settings, store, adapters, playbooks
        self.worker_id, self.clock = worker_id, clock
        self.retry = RetryPolicy.from_settings(settings)
        self._all_loaded = False  # every playbook file loaded when last looked (waiting events woken)

    def process_group(self, events: list[Event]) -> None:
        """Events of one source and account, in turn; a CRM that reads many deals at once
        (``DealBatches``) reads theirs together first. Events of an account that is not
        connected here are settled ``ignored``, saying why."""
        unconnected = self._unconnected(events[0])
        if unconnected is not None:
            self._not_acted_on(events, *unconnected)
            return
        read = self._read_together(events)
        for event in events:
            self.process(event, read.get(event.id, UNREAD))

    def _not_acted_on(self, events: list[Event], why: str, status: str | None) -> None:
        """Settle ``ignored`` the events of an account not connected here. One already held back
        because its account was disconnected while it was handled keeps waiting instead
        (``queue.resume_account`` makes it due when the account is installed again)."""
        first = events[0]
        held = queue.disconnected_note(first.source, first.account)
        waiting = [e for e in events if status is not None and (e.outcome or "").startswith(held)]
        for event in waiting:
            self.failed(event, Disconnected(first.source, first.account, status))
        ignored = [e for e in events if e not in waiting]
        if ignored:
            with unit_of_work(self.store, actor=self.worker_id, clock=self.clock) as uow:
                for event in ignored:
                    queue.settle_event(uow.session, event.id, EventState.IGNORED, note=why, now=uow.now)
            log.info("%d event(s) ignored: %s", len(ignored), why)

    def _unconnected(self, event: Event) -> tuple[str, str | None] | None:
        """Why a CRM's event is not acted on, and the connection's status reason: its account is
        installed here but disconnected or removed, or not installed here while the CRM has no
        environment connection either. None when it is acted on."""
        if event.source in ("sweep", "generic"):
            return None
        crm, account = event.source, event.account
        with self.store.read() as session:
            found = session.execute(
                select(AccountConnection.status, AccountConnection.status_reason).where(
                    AccountConnection.crm == crm, AccountConnection.account == account
                )
            ).first()
        if found is None:
            if crm in self.adapters:
                return None  # the environment's connection answers (or says it cannot)
            return f"no connection to the {crm} account {account} is installed here", None
        status, reason = found
        if status == CONNECTED:
            return None
        why = f"the {crm} account {account} is {status}" + (f" ({reason})" if reason else "")
        return f"{why}: not acted on until it is installed again", reason or status

    def _read_together(self, events: list[Event]) -> dict[int, Any]:
        """What each event means, read in the CRM's batch calls; {} when it has none."""
        first = events[0]
        if len(events) < 2 or first.source in ("sweep", "generic"):
            return {}
        try:
            adapter = adapter_for(self.adapters, first.source, first.account)
        except CrmPermanent:
            return {}
        if not isinstance(adapter, DealBatches):
            return {}
        try:
            results: list[Any] = adapter.interpret_many([(e.kind, e.payload) for e in events])
        except Exception as exc:  # the whole read failed: each event meets the error
            results = [exc] * len(events)
        return {event.id: result for event, result in zip(events, results, strict=True)}

    def process(self, event: Event, read: Any = UNREAD) -> None:
        """Handle the event and settle it, or put it back as the retry policy says.

        ``read``: what the event means, when it was read with others (``process_group``).
        """
        try:
            outcome = self.interpret(event, read)
        except Exception as exc:  # the retry policy says what becomes of the event
            self.failed(event, exc)
            return
        with unit_of_work(self.store, actor=self.worker_id, clock=self.clock) as uow:
            queue.settle_event(
                uow.session, event.id, EventState(outcome.state), note=outcome.note, now=uow.now
            )

    def interpret(self, event: Event, read: Any = UNREAD) -> Outcome:
        if event.source == "sweep":
            deal = Deal.model_validate(event.payload["deal"])
            return self.start(deal, event_id=event.id, trigger="contract_end")
        change = self._change(event) if read is UNREAD else read
        if isinstance(change, Exception):
            raise change
        if change is None:
            return Outcome("ignored", "not a deal closing or re-opening")
        if isinstance(change, TaskChange):
            return self.task_changed(event, change)
        if change.change == "reopened":
            with unit_of_work(self.store, actor=self.worker_id, clock=self.clock) as uow:
                return offboarding.cancel_deal(uow, change.deal, reason=f"deal re-opened (event {event.id})")
        with self.store.read() as session:
            context = account_context(
                session, self.settings, change.deal.crm, change.deal.account, self.clock()
            )
        too_old = closed_too_long_ago(change.deal, self.settings.max_close_age_days, context.today)
        if too_old is not None:
            return Outcome("ignored", too_old)
        return self.start(change.deal, event_id=event.id, trigger="deal_closed")

    def start(self, deal: Deal, *, event_id: int | None, trigger: str) -> Outcome:
        """Start the matching playbook's run for this deal, unless the deal already has one."""
        with unit_of_work(self.store, actor="worker", clock=self.clock) as uow:
            context = account_context(uow.session, self.settings, deal.crm, deal.account, uow.now)
            return offboarding.start_offboarding(
                uow, deal, self.playbooks, context, trigger=trigger, event_id=event_id
            )

    def task_changed(self, event: Event, change: TaskChange) -> Outcome:
        """A checklist task changed in the CRM: read it (who, when, its evidence) and apply it."""
        crm, account = event.source, event.account
        with self.store.read() as session:
            ours = session.scalar(
                select(ChecklistTask.id).filter_by(crm=crm, account=account, task_id=change.task_id).limit(1)
            )
        if ours is None:
            return Outcome("ignored", f"task {change.task_id} is on no Offboard checklist")
        adapter = adapter_for(self.adapters, crm, account)
        if isinstance(adapter, TaskReader):
            states = adapter.read_tasks([change.task_id])
        elif change.completed is not None:
            states = [
                TaskState(id=change.task_id, completed=change.completed, completed_at=change.occurred_at)
            ]
        else:
            return Outcome("ignored", f"the {crm} adapter cannot read task {change.task_id}")
        if not states:
            return Outcome("ignored", f"task {change.task_id} is no longer in the CRM")
        with unit_of_work(self.store, actor=self.worker_id, clock=self.clock) as uow:
            changed = checklist.apply(uow, self.settings, crm, account, states)
        what = "completed" if states[0].completed else "open"
        return Outcome("done", f"task {change.task_id} is {what}" + ("" if changed else " (already known)"))

    def _change(self, event: Event) -> DealChange | TaskChange | None:
        """What the event means: the generic schema is the core's; a CRM's own events are its adapter's."""
        if event.source == "generic":
            generic = GenericEvent.model_validate(event.payload)
            told = adapter_for(self.adapters, generic.crm, generic.account)
            deal = generic.to_deal(generic.account or told.account)
            if isinstance(told, DealKeeper):  # the sandbox keeps the deals events tell it about
                told.put_deal(deal)
            if generic.type == "deal.reopened":
                return DealChange(deal=deal, change="reopened", occurred_at=generic.occurred_at)
            return DealChange(deal=deal, change="closed", occurred_at=generic.occurred_at)
        adapter = adapter_for(self.adapters, event.source, event.account)
        if not isinstance(adapter, InboundAdapter):
            raise PayloadInvalid(f"the {event.source!r} adapter does not take inbound events")
        return adapter.interpret(event.kind, event.payload)

    def failed(self, event: Event, exc: Exception) -> None:
        """Apply the retry policy's decision: settle the event, or put it back for later."""
        decision = self.retry.decide(exc, event.attempts)
        if decision.unexpected:
            log.error("event %s raised unexpectedly", event.id, exc_info=exc)
        with unit_of_work(self.store, actor=self.worker_id, clock=self.clock) as uow:
            if decision.verdict in (Verdict.PARK, Verdict.SKIP):
                log.warning("event %s %s: %s", event.id, decision.verdict, decision.note)
                state = EventState.FAILED if decision.verdict is Verdict.PARK else EventState.IGNORED
                queue.settle_event(uow.session, event.id, state, note=decision.note, now=uow.now)
                return
            attempts = event.attempts if decision.counts_attempt else max(event.attempts - 1, 0)
            due = uow.now + decision.delay
            queue.retry_later(
                uow.session,
                Event,
                event.id,
                worker_id=self.worker_id,
                due=due,
                attempts=attempts,
                note=decision.note,
            )
        log.warning(
            "event %s: %s, due again in %.0fs: %s",
            event.id,
            decision.verdict,
            decision.delay.total_seconds(),
            decision.note,
        )

    def wake_waiting(self) -> None:
        """Once every playbook file loads again, the deal events held back for one are due at once."""
        self.playbooks()  # the registry's due check for edits runs here
        if unloaded_playbooks(self.playbooks):
            self._all_loaded = False
            return
        if self._all_loaded:
            return
        self._all_loaded = True
        with unit_of_work(self.store, actor=self.worker_id, clock=self.clock) as uow:
            woken = queue.wake_waiting_events(uow.session, prefix=WAITING, now=uow.now)
        if woken:
            log.info("every playbook loads: %d waiting event(s) due now", woken)
