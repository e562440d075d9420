"""The worker: turns inbox events into runs, and executes due actions through the adapters.

Both queues are claimed the same way: a short transaction marks rows
``running`` with a lease (``FOR UPDATE SKIP LOCKED`` on Postgres, one writer on
SQLite), the work happens outside any transaction, and a second short
transaction records the outcome. A worker that dies leaves its rows to be
reclaimed when the lease runs out, so every accepted event is processed and
every action executed at least once; idempotency keys make the CRM effect
happen once. Leases are short (``OFFBOARD_LEASE_SECONDS``, 20 s), so a dead worker's rows
come back within seconds; an action taken over that way tells its adapter that the dead
attempt's outcome is unknown (``OutcomeAware``), so a CRM whose reads lag behind its writes
waits for them before writing.

A live worker keeps what it holds: while ``run_forever`` runs, a lease keeper
renews the leases of the rows it has claimed and not finished, and before each
row the worker checks it still holds it. So a batch that takes longer than the
lease (a slow CRM, a rate-limit wait) is never worked by two workers at once,
which the CRM's search-based deduplication could not tell apart while its index
lags. On SIGTERM the worker stops claiming, finishes the row in hand, and puts
the rest back (``release``) for any worker to take at once.

While ``run_forever`` runs, the contract-end sweep has a thread of its own (a slow CRM
listing never holds up events and actions; the ``schedules`` row still lets one worker
at a time sweep), and the worker's row in ``workers`` shows it alive (``heartbeat``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, and_, or_, select, update
from sqlalchemy.orm import Session
from tenacity import RetryCallState, Retrying

from adapters.base import BudgetAware, CrmAdapter, DealKeeper, InboundAdapter, OutcomeAware
from connector import feedback, heartbeat, links
from connector.clock import Clock, utcnow
from connector.errors import CrmPermanent, Deferred, PayloadInvalid, Skip
from connector.generic import GenericEvent
from connector.models import (
    AnswerSpec,
    Deal,
    DealChange,
    Invite,
    InviteKind,
    NoteSpec,
    PropertyUpdate,
    ReferralSpec,
    TaskSpec,
)
from connector.planner import PlanContext, choose, plan
from connector.playbooks.loader import LoadedPlaybook
from connector.retry import Decision, RetryPolicy, Verdict
from connector.runs import start_run, survey_sent
from connector.settings import Settings
from connector.store import Action, AuditEntry, ContactTouch, Event, Run, Schedule, Store
from connector.store.db import insert
from connector.sweep import SweepReport, sweep

log = logging.getLogger("offboard.worker")

Playbooks = Callable[[], list[LoadedPlaybook]]

# The checklist itself is written even when a CRM's budget runs low; surveys, asks,
# notes and property updates can wait for it to recover.
URGENT_KINDS = frozenset({"tasks"})
SWEEP_JOIN_SECONDS = 10.0  # how long a stopping worker waits for its sweep to reach a stopping point
# A deal event waiting for a playbook file to load is looked at again this often; a worker
# that sees every file load wakes the waiting ones at once.
WAIT_FOR_PLAYBOOKS_SECONDS = 60.0
WAITING = "waiting: "  # how the outcome of an event held back for the playbooks begins


@dataclass(frozen=True)
class Outcome:
    state: str  # done | ignored
    note: str


class Worker:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        adapters: Mapping[str, CrmAdapter],
        playbooks: Playbooks,
        *,
        clock: Clock = utcnow,
        worker_id: str | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.adapters = adapters
        self.playbooks = playbooks
        self.clock = clock
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:8]}"
        self._sleep = sleep
        self.retry = RetryPolicy.from_settings(settings)  # what a failure leads to, for both queues
        self._stop: threading.Event | None = None  # run_forever's: once set, nothing more is claimed
        # Rows claimed and not yet started, by table: the lease keeper renews them, release() puts them back.
        self._held: dict[type[Event] | type[Action], set[int]] = {Event: set(), Action: set()}
        self._in_hand: tuple[type[Event] | type[Action], int] | None = None  # renewed, never put back
        self._held_lock = threading.Lock()
        # Actions of the batch in hand taken over from a dead attempt: id → when its lease ran out.
        self._reclaimed: dict[int, datetime] = {}
        self._lease_writes = threading.Lock()  # the keeper's and release()'s updates never cross (Postgres)
        self._sweeps_inline = True  # run_forever sweeps in a thread of its own instead
        self._all_loaded = False  # every playbook file loaded when last looked (waiting events woken)

    # --- the loop --------------------------------------------------------

    def tick(self) -> int:
        """Process what is due now; return how many events and actions were handled."""
        if self._sweeps_inline:
            self.sweep_when_due()
        return self.process_events() + self.execute_due_actions()

    def run_until_idle(self, max_ticks: int = 100) -> int:
        """Tick until nothing is due (tests, the demo, ``offboard worker --once``)."""
        total = 0
        for _ in range(max_ticks):
            done = self.tick()
            total += done
            if not done:
                break
        return total

    def run_forever(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set; then finish the row in hand, put back the rest, and return."""
        log.info("worker %s started", self.worker_id)
        self._stop = stop
        heartbeat.start(self.store, self.worker_id, self.clock())
        keeper_stop = threading.Event()
        keeper = threading.Thread(
            target=self._keep_leases, args=(keeper_stop,), name=f"{self.worker_id}-leases", daemon=True
        )
        keeper.start()
        sweeper = self._start_sweeper(stop)
        try:
            while not stop.is_set():
                try:
                    busy = self.tick()
                except Exception:  # keep the loop alive; the row that failed comes back after its lease
                    log.exception("worker tick failed")
                    busy = 0
                if not busy:
                    stop.wait(self.settings.worker_poll_seconds)
        finally:
            keeper_stop.set()
            keeper.join()
            released = self.release()
            self._stop_sweeper(sweeper)
            heartbeat.stop(self.store, self.worker_id)
            self._stop = None
            log.info("worker %s stopped (%d claimed row(s) put back)", self.worker_id, released)

    def release(self) -> int:
        """Put back every row this worker claimed and has not started: pending, lease cleared.

        Any worker may take them at once; the claim's attempt is given back, since nothing
        was tried. A row whose handling had started is not put back: if it ended half-way (the
        process is being forced down), it comes back when its lease runs out, by which time
        the CRM shows what it wrote.
        """
        with self._held_lock:
            events, actions = sorted(self._held[Event]), sorted(self._held[Action])
            self._held[Event].clear()
            self._held[Action].clear()
        if not events and not actions:
            return 0
        with self._lease_writes, self.store.session() as session:
            released = _rows(
                session,
                update(Event)
                .where(Event.id.in_(events), Event.state == "running")
                .values(state="pending", lease_until=None, attempts=Event.attempts - 1),
            )
            released += self._put_back_actions(session, actions)
        return released

    def _put_back_actions(self, session: Session, ids: list[int]) -> int:
        """Actions back to pending; one taken over from a dead attempt keeps that attempt's lease end,
        so whoever claims it next still knows its outcome is unknown (see ``_claim``)."""
        put_back = 0
        for lease_until, chosen in (
            (None, [i for i in ids if i not in self._reclaimed]),
            *((self._reclaimed[i], [i]) for i in ids if i in self._reclaimed),
        ):
            if not chosen:
                continue
            put_back += _rows(
                session,
                update(Action)
                .where(Action.id.in_(chosen), Action.claimed_by == self.worker_id, Action.state == "running")
                .values(
                    state="pending", lease_until=lease_until, claimed_by=None, attempts=Action.attempts - 1
                ),
            )
        return put_back

    @property
    def stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _work_through(
        self, table: type[Event] | type[Action], rows: list[Any], handle: Callable[[Any], None]
    ) -> None:
        """Handle claimed rows in turn, each only while this worker still holds it.

        On a stop, the rows not reached are put back; so are they if handling one raises
        (that one stays leased, and comes back when the lease runs out).
        """
        with self._held_lock:
            self._held[table].update(row.id for row in rows)
        try:
            for row in rows:
                if self.stopping:
                    break
                with self._held_lock:
                    self._held[table].discard(row.id)
                if not self._still_held(table, row):
                    continue
                with self._held_lock:
                    self._in_hand = (table, row.id)
                try:
                    handle(row)
                finally:
                    with self._held_lock:
                        self._in_hand = None
        finally:
            self.release()

    def _still_held(self, table: type[Event] | type[Action], row: Any) -> bool:
        """Renew the row's lease if this worker still holds it (its lease may have run out and been taken).

        Events have no owner column: one processed twice makes no second run, so for them
        it is enough that the row is still running.
        """
        lease_until = self.clock() + timedelta(seconds=self.settings.lease_seconds)
        mine = [table.id == row.id, table.state == "running"]
        if table is Action:
            mine.append(Action.claimed_by == self.worker_id)
        with self.store.session() as session:
            held = _rows(session, update(table).where(*mine).values(lease_until=lease_until))
        if not held:
            log.warning(
                "%s %s was taken over after its lease ran out; not running it", table.__name__.lower(), row.id
            )
        return bool(held)

    def _keep_leases(self, stop: threading.Event) -> None:
        """Beat the worker's heartbeat, and renew the leases of the rows it holds, every few seconds."""
        while not stop.wait(min(heartbeat.BEAT_SECONDS, self.settings.lease_seconds / 3)):
            try:
                heartbeat.beat(self.store, self.worker_id, self.clock())
                self._renew_leases()
            except Exception:  # the next round tries again; a lease that runs out meanwhile is safe
                log.exception("worker %s could not renew its leases", self.worker_id)

    def _renew_leases(self) -> None:
        with self._held_lock:
            events, actions = sorted(self._held[Event]), sorted(self._held[Action])
            in_hand = self._in_hand
        if in_hand is not None:
            (events if in_hand[0] is Event else actions).append(in_hand[1])
        if not events and not actions:
            return
        lease_until = self.clock() + timedelta(seconds=self.settings.lease_seconds)
        with self._lease_writes, self.store.session() as session:
            if events:
                session.execute(
                    update(Event)
                    .where(Event.id.in_(events), Event.state == "running")
                    .values(lease_until=lease_until)
                )
            if actions:
                session.execute(
                    update(Action)
                    .where(
                        Action.id.in_(actions), Action.claimed_by == self.worker_id, Action.state == "running"
                    )
                    .values(lease_until=lease_until)
                )

    # --- the contract-end sweep ---------------------------------------------

    def _start_sweeper(self, stop: threading.Event) -> threading.Thread:
        """Sweep in a thread beside the loop, so a long sweep never holds up events and actions."""
        self._sweeps_inline = False
        sweeper = threading.Thread(
            target=self._sweep_beside, args=(stop,), name=f"{self.worker_id}-sweep", daemon=True
        )
        sweeper.start()
        return sweeper

    def _sweep_beside(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.sweep_when_due(stop)
            except Exception:  # the next schedule tries again
                log.exception("worker %s: the contract-end sweep failed", self.worker_id)
            stop.wait(self.settings.worker_poll_seconds)

    def _stop_sweeper(self, sweeper: threading.Thread) -> None:
        # A sweep stops between two CRM calls; one still waiting on the CRM is left to its
        # daemon thread: what it queued is queued, and the next sweep lists the rest again.
        sweeper.join(timeout=SWEEP_JOIN_SECONDS)
        self._sweeps_inline = True

    def sweep_when_due(self, stop: threading.Event | None = None) -> None:
        """Run the sweep if this worker is the one to move its schedule forward."""
        interval = self.settings.sweep_interval_seconds
        if interval <= 0:
            return
        now = self.clock()
        with self.store.session() as session:
            session.execute(
                insert(session, Schedule).values(name="sweep", next_at=now).on_conflict_do_nothing()
            )
            due = _rows(
                session,
                update(Schedule)
                .where(Schedule.name == "sweep", Schedule.next_at <= now)
                .values(next_at=now + timedelta(seconds=interval)),
            )
        if due:
            self.sweep(now, stop=stop)

    def sweep(self, now: datetime | None = None, *, stop: threading.Event | None = None) -> SweepReport:
        return sweep(self.settings, self.store, self.adapters, self.playbooks, now or self.clock(), stop=stop)

    # --- events → runs ---------------------------------------------------

    def process_events(self) -> int:
        if self.stopping:
            return 0
        self._wake_waiting_events()
        events = self._claim(Event, Event.available_at)
        self._work_through(Event, events, self._process_event)
        return len(events)

    def _wake_waiting_events(self) -> None:
        """Once every playbook file loads again, the deal events held back for one are due at once."""
        self.playbooks()  # the registry's due check for edits runs here
        if unloaded_playbooks(self.playbooks):
            self._all_loaded = False
            return
        if self._all_loaded:
            return
        self._all_loaded = True
        now = self.clock()
        with self.store.session() as session:
            woken = _rows(
                session,
                update(Event)
                .where(Event.state == "pending", Event.available_at > now, Event.outcome.startswith(WAITING))
                .values(available_at=now),
            )
        if woken:
            log.info("every playbook loads: %d waiting event(s) due now", woken)

    def _process_event(self, event: Event) -> None:
        try:
            outcome = self._interpret(event)
        except Exception as exc:  # the retry policy says what becomes of the event
            self._event_failed(event, exc)
            return
        self._finish_event(event, outcome.state, outcome.note)

    def _interpret(self, event: Event) -> Outcome:
        if event.source == "sweep":
            deal = Deal.model_validate(event.payload["deal"])
            return self.start_offboarding(deal, event_id=event.id, trigger="contract_end")
        change = self._change(event)
        if change is None:
            return Outcome("ignored", "not a deal closing or re-opening")
        if change.change == "reopened":
            return self.cancel_deal(change.deal, reason=f"deal re-opened (event {event.id})")
        today = self.clock().astimezone(self.settings.zone).date()
        too_old = closed_too_long_ago(change.deal, self.settings.max_close_age_days, today)
        if too_old is not None:
            return Outcome("ignored", too_old)
        return self.start_offboarding(change.deal, event_id=event.id, trigger="deal_closed")

    def _change(self, event: Event) -> DealChange | None:
        """What the event means: the generic schema is the core's; a CRM's own events are its adapter's."""
        if event.source == "generic":
            generic = GenericEvent.model_validate(event.payload)
            told = self._adapter(generic.crm)
            deal = generic.to_deal(generic.account or told.account)
            if isinstance(told, DealKeeper):  # the sandbox keeps the deals events tell it about
                told.put_deal(deal)
            if generic.type == "deal.reopened":
                return DealChange(deal=deal, change="reopened", occurred_at=generic.occurred_at)
            return DealChange(deal=deal, change="closed", occurred_at=generic.occurred_at)
        adapter = self._adapter(event.source)
        if not isinstance(adapter, InboundAdapter):
            raise PayloadInvalid(f"the {event.source!r} adapter does not take inbound events")
        return adapter.interpret(event.kind, event.payload)

    def start_offboarding(self, deal: Deal, *, event_id: int | None, trigger: str) -> Outcome:
        """Start the matching playbook's run for this deal, unless the deal already has one."""
        now = self.clock()
        context = self.plan_context(now)
        playbooks = self.playbooks()
        missing = unloaded_playbooks(self.playbooks)
        if missing:  # the missing one may be the deal's: another playbook's run would be for good
            raise PlaybooksIncomplete(missing)
        loaded, _ = choose(deal, playbooks, trigger=trigger, today=context.today)
        if loaded is None:
            return Outcome("ignored", "no playbook matches this deal")
        laid_out = plan(deal, loaded.playbook, context)
        with self.store.session() as session:
            started = start_run(
                session,
                deal=deal,
                loaded=loaded,
                plan=laid_out,
                trigger=trigger,
                event_id=event_id,
                now=now,
            )
        if not started.created:
            existing = started.run
            return Outcome(
                "done",
                f"nothing new: the deal already has run {existing.id} ({existing.playbook_id}, "
                f"{existing.trigger}, {existing.state})",
            )
        log.info("run %s started: deal %s, playbook %s", started.run.id, deal.id, loaded.id)
        return Outcome("done", f"run {started.run.id} started with playbook {loaded.id}")

    def cancel_deal(self, deal: Deal, *, reason: str) -> Outcome:
        """Cancel the pending actions of every active run of this deal."""
        now = self.clock()
        with self.store.session() as session:
            runs = session.scalars(
                select(Run).filter_by(crm=deal.crm, account=deal.account, deal_id=deal.id, state="active")
            ).all()
            for run in runs:
                cancelled = cancel_run(session, run, reason=reason, actor=self.worker_id, now=now)
                log.info("run %s cancelled (%d pending actions): %s", run.id, cancelled, reason)
        return (
            Outcome("done", f"cancelled {len(runs)} run(s)") if runs else Outcome("ignored", "no active run")
        )

    def plan_context(self, now: datetime) -> PlanContext:
        return PlanContext.from_settings(self.settings, now)

    def _event_failed(self, event: Event, exc: Exception) -> None:
        """Apply the retry policy's decision: finish the event, or put it back for later."""
        decision = self.retry.decide(exc, event.attempts)
        if decision.unexpected:
            log.error("event %s raised unexpectedly", event.id, exc_info=exc)
        if decision.verdict in (Verdict.PARK, Verdict.SKIP):
            log.warning("event %s %s: %s", event.id, decision.verdict, decision.note)
            state = "failed" if decision.verdict is Verdict.PARK else "ignored"
            self._finish_event(event, state, decision.note)
            return
        attempts = event.attempts if decision.counts_attempt else max(event.attempts - 1, 0)
        with self.store.session() as session:
            session.execute(
                update(Event)
                .where(Event.id == event.id)
                .values(
                    state="pending",
                    attempts=attempts,
                    lease_until=None,
                    available_at=self.clock() + decision.delay,
                    outcome=decision.note,
                )
            )
        log.warning(
            "event %s: %s, due again in %.0fs: %s",
            event.id,
            decision.verdict,
            decision.delay.total_seconds(),
            decision.note,
        )

    def _finish_event(self, event: Event, state: str, note: str) -> None:
        with self.store.session() as session:
            session.execute(
                update(Event)
                .where(Event.id == event.id)
                .values(state=state, outcome=note, lease_until=None, processed_at=self.clock())
            )

    # --- actions → CRM ---------------------------------------------------

    def execute_due_actions(self) -> int:
        if self.stopping:
            return 0
        actions = self._claim(Action, Action.due_at)
        self._work_through(Action, actions, self._execute)
        return len(actions)

    def _execute(self, action: Action) -> None:
        with self.store.session() as session:
            run = session.get_one(Run, action.run_id)
            crm = run.crm
        if action.kind == "deadline":
            self._deadline(action, crm)
            return
        try:
            adapter = self._adapter(crm)
            self._check_budget(adapter, action)
            self._check_fatigue(crm, action)
            self._warn_of_unknown_outcome(adapter, action)
            result = self._with_inline_retries(lambda: self._perform(adapter, action))
        except Exception as exc:  # the retry policy says what becomes of the action
            self._action_failed(action, crm, exc)
        else:
            self._complete(action, crm, result)

    def _action_failed(self, action: Action, crm: str, exc: Exception) -> None:
        """Apply the retry policy's decision through the action's state writes."""
        decision = self.retry.decide(exc, action.attempts)
        if decision.unexpected:
            log.error("action %s raised unexpectedly", action.id, exc_info=exc)
        if decision.verdict is Verdict.SKIP:
            self._finish(action, crm, "skipped", {"reason": decision.note}, error=f"skipped: {decision.note}")
        elif decision.verdict is Verdict.PARK:
            self._park(action, crm, decision.note)
        else:
            self._reschedule(action, decision)

    def _check_budget(self, adapter: CrmAdapter, action: Action) -> None:
        """Hold back non-urgent work while the CRM account's shared budget runs low."""
        if action.kind in URGENT_KINDS or not isinstance(adapter, BudgetAware):
            return
        reason = adapter.deferral_reason()
        if reason is not None:
            raise Deferred(f"deferred: {reason}")

    def _with_inline_retries(self, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """A few quick retries for blips, before the action goes back in the queue.

        tenacity runs the loop; whether to try again, and after what pause, is the retry
        policy's (``RetryPolicy.quick``), so those rules live with the queue's.
        """

        def quick(state: RetryCallState) -> Decision | None:
            error = state.outcome.exception() if state.outcome is not None else None
            return None if error is None else self.retry.quick(error, state.attempt_number)

        def pause(state: RetryCallState) -> float:
            decision = quick(state)
            return decision.delay.total_seconds() if decision is not None else 0.0

        retrying = Retrying(
            retry=lambda state: quick(state) is not None,
            wait=pause,
            reraise=True,
            sleep=self._sleep or _default_sleep,
        )
        return retrying(call)

    def _warn_of_unknown_outcome(self, adapter: CrmAdapter, action: Action) -> None:
        """Taken over from a dead attempt: the adapter must not trust reads that may lag behind it."""
        since = self._reclaimed.get(action.id)
        if since is not None and isinstance(adapter, OutcomeAware):
            log.info("action %s was taken over after its lease ran out at %s", action.id, since.isoformat())
            adapter.outcome_unknown(action.idempotency_key, since)

    def _perform(self, adapter: CrmAdapter, action: Action) -> dict[str, Any]:
        key = action.idempotency_key
        payload = action.payload
        if action.kind == "tasks":
            tasks = [TaskSpec.model_validate(t) for t in payload["tasks"]]
            return {"task_ids": adapter.create_tasks(tasks, key)}
        if action.kind == "note":
            return {"note_id": adapter.add_note(NoteSpec.model_validate(payload), key)}
        if action.kind == "property":
            adapter.update_properties(PropertyUpdate.model_validate(payload), key)
            return {"properties": payload["properties"]}
        if action.kind in ("survey", "referral"):
            return {"invite_id": adapter.send_invite(self._invite(action), key)}
        if action.kind == "answer":
            return {"answer_id": adapter.record_answer(AnswerSpec.model_validate(payload), key)}
        if action.kind == "referral_contact":
            return {"contact_id": adapter.create_referral(ReferralSpec.model_validate(payload), key)}
        raise CrmPermanent(f"unknown action kind {action.kind!r}")

    def _check_fatigue(self, crm: str, action: Action) -> None:
        """No second survey of a kind to a contact within the fatigue window, across runs."""
        days = self.settings.survey_fatigue_days
        if action.kind != "survey" or not days or action.payload.get("answers") != action.step_id:
            return  # reminders belong to their own survey
        since = self.clock() - timedelta(days=days)
        with self.store.session() as session:
            run = session.get_one(Run, action.run_id)
            earlier = session.scalars(
                select(ContactTouch)
                .where(
                    ContactTouch.crm == crm,
                    ContactTouch.account == run.account,
                    ContactTouch.contact_id == action.payload.get("contact_id"),
                    ContactTouch.kind == action.payload.get("survey"),
                    ContactTouch.run_id != action.run_id,
                    ContactTouch.sent_at >= since,
                )
                .order_by(ContactTouch.sent_at.desc())
            ).first()
        if earlier is not None:
            raise Skip(
                f"the contact got a {earlier.kind.upper()} survey on {earlier.sent_at:%Y-%m-%d} "
                f"(run {earlier.run_id}); no second one within {days} days"
            )

    def _deadline(self, action: Action, crm: str) -> None:
        """A survey's answer window closed: queue its no-answer steps, in one transaction."""
        now = self.clock()
        with self.store.session() as session:
            run = session.get_one(Run, action.run_id)
            result = feedback.deadline_passed(session, self.settings, run, action.payload["survey_step"], now)
            self._mark(session, action, crm, "done", result, None, now)

    def _invite(self, action: Action) -> Invite:
        payload = action.payload
        if not payload.get("contact_id"):
            raise CrmPermanent("the deal has no contact to send this to")
        purpose, claims = links.invite_claims(action.run_id, action.kind, action.step_id, payload)
        kind: InviteKind = claims["kind"]
        link = links.make_link(
            self.settings.public_url, self.settings.secret_key.get_secret_value(), purpose, claims
        )
        return Invite(
            step_id=action.step_id,
            kind=kind,
            deal_id=payload["deal_id"],
            contact_id=payload["contact_id"],
            email=payload.get("email"),
            link=link,
            sender=self.settings.brand_name,
            reply_to=self.settings.brand_reply_to,
        )

    def _complete(self, action: Action, crm: str, result: dict[str, Any]) -> None:
        self._finish(action, crm, "done", result, error=None)
        log.info("action %s (%s) done: %s", action.id, action.kind, result)

    def _finish(
        self, action: Action, crm: str, state: str, result: dict[str, Any], *, error: str | None
    ) -> None:
        with self.store.session() as session:
            self._mark(session, action, crm, state, result, error, self.clock())

    def _mark(
        self,
        session: Session,
        action: Action,
        crm: str,
        state: str,
        result: dict[str, Any],
        error: str | None,
        now: datetime,
    ) -> None:
        """Record an outcome, if this worker still holds the action; audit it; close the run when done."""
        claimed = _rows(
            session,
            update(Action)
            .where(Action.id == action.id, Action.claimed_by == self.worker_id, Action.state == "running")
            .values(state=state, result=result, done_at=now, lease_until=None, last_error=error),
        )
        if not claimed:
            return  # our lease ran out and another worker took it over; it records the outcome
        if action.kind == "survey" and state == "done":
            run = session.get_one(Run, action.run_id)
            session.add(
                ContactTouch(
                    crm=crm,
                    account=run.account,
                    contact_id=action.payload["contact_id"],
                    kind=action.payload["survey"],
                    run_id=run.id,
                    sent_at=now,
                )
            )
            survey_sent(session, action, now)  # its answer window counts from the actual send
        if action.kind == "referral_contact" and state == "done":
            _release_follow_up(session, action, str(result["contact_id"]), now)
        verb = f"{action.kind}.written" if state == "done" else f"action.{state}"
        session.add(
            AuditEntry(
                actor=self.worker_id,
                verb=verb,
                run_id=action.run_id,
                action_id=action.id,
                crm=crm,
                detail=result,
                at=now,
            )
        )
        _close_run_if_finished(session, action.run_id)

    def _reschedule(self, action: Action, decision: Decision) -> None:
        """Put the action back in the queue, due after the decision's delay."""
        attempts = action.attempts if decision.counts_attempt else max(action.attempts - 1, 0)
        with self.store.session() as session:
            _rows(
                session,
                update(Action)
                .where(
                    Action.id == action.id,
                    Action.claimed_by == self.worker_id,
                    Action.state == "running",
                )
                .values(
                    state="pending",
                    due_at=self.clock() + decision.delay,
                    lease_until=None,
                    attempts=attempts,
                    last_error=decision.note,
                ),
            )
        log.warning(
            "action %s (%s): %s, due again in %.0fs: %s",
            action.id,
            action.kind,
            decision.verdict,
            decision.delay.total_seconds(),
            decision.note,
        )

    def _park(self, action: Action, crm: str, note: str) -> None:
        now = self.clock()
        with self.store.session() as session:
            parked = _rows(
                session,
                update(Action)
                .where(
                    Action.id == action.id,
                    Action.claimed_by == self.worker_id,
                    Action.state == "running",
                )
                .values(state="failed", lease_until=None, last_error=note),
            )
            if parked:
                session.add(
                    AuditEntry(
                        actor=self.worker_id,
                        verb="action.failed",
                        run_id=action.run_id,
                        action_id=action.id,
                        crm=crm,
                        detail={"error": note},
                        at=now,
                    )
                )
        log.error("action %s failed after %d attempt(s): %s", action.id, action.attempts, note)

    # --- claiming ----------------------------------------------------------

    def _claim(self, table: type[Event] | type[Action], due_column: Any) -> list[Any]:
        """Lease up to a batch of due rows to this worker, atomically.

        A row that still carries a lease was held by an attempt that never finished (its worker
        died): for actions, when that lease ran out is kept, as the moment after which the dead
        attempt wrote nothing, so the adapter can wait for its reads to show what it wrote.
        """
        now = self.clock()
        lease_until = now + timedelta(seconds=self.settings.lease_seconds)
        with self.store.session() as session:
            found = session.execute(
                select(table.id, table.lease_until)
                .where(
                    or_(
                        and_(table.state == "pending", due_column <= now),
                        and_(table.state == "running", table.lease_until < now),
                    )
                )
                .order_by(due_column, table.id)
                .limit(self.settings.worker_batch)
                .with_for_update(skip_locked=True)
            ).all()
            ids = [row_id for row_id, _ in found]
            if table is Action:
                self._reclaimed = {row_id: held for row_id, held in found if held is not None}
            if not ids:
                return []
            session.execute(
                update(table)
                .where(table.id.in_(ids))
                .values(
                    state="running",
                    lease_until=lease_until,
                    attempts=table.attempts + 1,
                    **({"claimed_by": self.worker_id} if table is Action else {}),
                )
            )
            rows = session.scalars(select(table).where(table.id.in_(ids)).order_by(table.id)).all()
            session.expunge_all()
            return list(rows)

    def _adapter(self, crm: str) -> CrmAdapter:
        try:
            return self.adapters[crm]
        except KeyError:
            raise CrmPermanent(f"the {crm!r} CRM is not configured on this connector") from None


def cancel_run(session: Session, run: Run, *, reason: str, actor: str, now: datetime) -> int:
    """Cancel a run's pending actions and the run itself; return how many actions were cancelled."""
    cancelled = _rows(
        session,
        update(Action)
        .where(Action.run_id == run.id, Action.state.in_(("pending", "waiting")))
        .values(state="cancelled", last_error=reason, updated_at=now),
    )
    run.state = "cancelled"
    run.note = reason
    session.add(
        AuditEntry(
            actor=actor,
            verb="run.cancelled",
            run_id=run.id,
            crm=run.crm,
            detail={"reason": reason, "actions_cancelled": cancelled},
            at=now,
        )
    )
    return int(cancelled or 0)


class PlaybooksIncomplete(Deferred):
    """A playbook file has no version loaded, so no run may start: the event waits for it
    (no playbook file's problem is the event's fault, so no attempt is used)."""

    def __init__(self, files: list[str]) -> None:
        one = len(files) == 1
        which = f"{files[0]} does not" if one else f"{', '.join(files)} do not"
        reason = f"{WAITING}{which} load; fix {'it' if one else 'them'} and run offboard validate"
        super().__init__(reason, seconds=WAIT_FOR_PLAYBOOKS_SECONDS)


def unloaded_playbooks(playbooks: Playbooks) -> list[str]:
    """The playbook files with no version in use (see ``PlaybookRegistry.unloaded``).

    A plain function handing out playbooks has no files of its own that could be missing.
    """
    return list(getattr(playbooks, "unloaded", []))


def closed_too_long_ago(deal: Deal, max_days: int, today: date) -> str | None:
    """Why a deal-closed event starts nothing for a deal that closed over ``max_days`` ago, or None.

    ``max_days`` 0 means no limit; a deal without a close date is not held to one.
    """
    if not max_days or deal.close_date is None or (today - deal.close_date).days <= max_days:
        return None
    return f"closed on {deal.close_date.isoformat()}, more than {max_days} days ago; nothing started"


def _release_follow_up(session: Session, referral: Action, contact_id: str, now: datetime) -> None:
    """The referred contact exists now: its follow-up task may be written, pointing at them."""
    follow_up = session.scalar(
        select(Action).where(
            Action.run_id == referral.run_id,
            Action.step_id == f"{referral.step_id}:follow-up",
            Action.state == "waiting",
        )
    )
    if follow_up is None:
        return
    tasks = [task | {"contact_id": contact_id} for task in follow_up.payload["tasks"]]
    follow_up.payload = {"tasks": tasks}
    follow_up.state, follow_up.due_at, follow_up.updated_at = "pending", now, now


def _close_run_if_finished(session: Session, run_id: int) -> None:
    open_states = ("pending", "running", "waiting")
    open_actions = session.scalar(
        select(Action.id).where(Action.run_id == run_id, Action.state.in_(open_states)).limit(1)
    )
    if open_actions is None:
        session.execute(update(Run).where(Run.id == run_id, Run.state == "active").values(state="done"))


def _rows(session: Session, statement: Any) -> int:
    """Execute an UPDATE and return how many rows it changed."""
    result = cast("CursorResult[Any]", session.execute(statement))
    return int(result.rowcount or 0)


def _default_sleep(seconds: float) -> None:
    threading.Event().wait(seconds)
