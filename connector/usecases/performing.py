"""Perform one claimed action: its kind's handler, its run's CRM, and the retry policy's decision.

The CRM call happens outside any transaction; what it changed is settled in one unit of
work (the action's state, the handler's after-effects, the audit entry, closing the run)
and only if this worker still holds the action. A failure goes to ``connector.retry``,
whose decision is applied through ``connector.queue``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select
from tenacity import RetryCallState, Retrying

from adapters import AdapterSet, NoConnection
from adapters.base import BudgetAware, CrmAdapter, OutcomeAware, Write
from connector import actions, queue
from connector.actions.base import Handler
from connector.clock import Clock, utcnow
from connector.errors import CrmPermanent, Deferred, OutcomeUnknown, SettingsInvalid
from connector.queue import ActionState
from connector.retry import Decision, RetryPolicy, Verdict
from connector.settings import Settings
from connector.store import Action, Run, Store
from connector.usecases.uow import UnitOfWork, unit_of_work

log = logging.getLogger("offboard.worker")
T = TypeVar("T")


def adapter_for(adapters: Mapping[str, CrmAdapter], crm: str, account: str | None) -> CrmAdapter:
    """The adapter of this CRM account's connection (``AdapterSet``), or CrmPermanent: none here."""
    try:
        if account is not None and isinstance(adapters, AdapterSet):
            return adapters.for_connection(crm, account)
        return adapters[crm]
    except (KeyError, NoConnection):
        raise CrmPermanent(f"the {crm!r} CRM is not configured on this connector") from None
    except SettingsInvalid as exc:  # an installed account whose adapter cannot be built from what is stored
        raise CrmPermanent(f"the {crm} account {account} cannot be worked in: {exc}") from None


def deferral(urgent: bool, low_budget: str | None) -> str | None:
    """Why an action waits for its CRM's budget to recover, or None: only work that is not urgent waits."""
    return None if urgent or low_budget is None else f"deferred: {low_budget}"


@dataclass
class Due:
    """A claimed action on its way: its run, whether an earlier attempt may have written, its
    payload once read, and what came of it (a result, or the error it met)."""

    action: Action
    run: Run
    unsure_since: datetime | None
    payload: Any = None
    outcome: dict[str, Any] | Exception | None = None


def _fail(group: list[Due], error: Exception) -> None:
    for due in group:
        if due.outcome is None:
            due.outcome = error


class ActionPerformer:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        adapters: Mapping[str, CrmAdapter],
        *,
        worker_id: str,
        clock: Clock = utcnow,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.store, self.adapters, self.clock, self.worker_id = store, adapters, clock, worker_id
        self.handlers = actions.registry(settings)
        self.retry = RetryPolicy.from_settings(settings)
        self._sleep = sleep or _default_sleep

    def perform(self, action: Action, *, reclaimed_since: datetime | None = None) -> None:
        """Perform one action and settle it (``perform_group`` of one)."""
        for group in self.groups([action], {action.id: reclaimed_since} if reclaimed_since else {}):
            self.perform_group(group)

    def groups(self, actions: list[Action], unsure: Mapping[int, datetime]) -> list[list[Due]]:
        """Claimed actions by kind and CRM account, in claim order: each group is written together.

        ``unsure``: when an earlier attempt of an action, whose outcome is unknown, could last
        have written (a dead holder's lease end, or a timed-out attempt's end).
        """
        ids = {a.run_id for a in actions}
        with self.store.read() as session:
            runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(ids)))}
        grouped: dict[tuple[str, str, str], list[Due]] = {}
        for action in actions:
            run = runs[action.run_id]
            key = (action.kind, run.crm, run.account)
            grouped.setdefault(key, []).append(Due(action, run, unsure.get(action.id)))
        return list(grouped.values())

    def perform_group(self, group: list[Due]) -> None:
        """Perform actions of one kind in one CRM account: in one call when the CRM has a batch
        call for the kind, else one by one; then settle them all in one unit of work."""
        handler = self.handlers.get(group[0].action.kind)
        if handler is None:
            _fail(group, CrmPermanent(f"unknown action kind {group[0].action.kind!r}"))
        else:
            self._prepare(handler, group)
            ready = [due for due in group if due.outcome is None]
            if ready and handler.local:
                for due in ready:
                    self._settle_local(handler, due)
                group = [due for due in group if due not in ready]
            elif ready:
                self._write(handler, ready)
        if group:
            self._settle_all(handler, group)

    def _prepare(self, handler: Handler[Any], group: list[Due]) -> None:
        """Read each payload, and rule out what waits for the budget or a business rule."""
        for due in group:
            try:
                due.payload = handler.parse(due.action)
            except Exception as exc:  # a payload that does not fit its kind is parked
                due.outcome = exc
        if handler.local:
            return
        run = group[0].run
        try:
            adapter = adapter_for(self.adapters, run.crm, run.account)
        except CrmPermanent as exc:
            _fail(group, exc)
            return
        low = adapter.deferral_reason() if isinstance(adapter, BudgetAware) else None
        reason = deferral(handler.urgent, low)
        if reason is not None:
            _fail(group, Deferred(reason))
            return
        with self._uow() as uow:
            for due in (d for d in group if d.outcome is None):
                try:
                    handler.before(uow, due.run, due.action, due.payload)
                except Exception as exc:  # Skip (survey fatigue), or what the retry policy decides
                    due.outcome = exc

    def _write(self, handler: Handler[Any], ready: list[Due]) -> None:
        run = ready[0].run
        adapter = adapter_for(self.adapters, run.crm, run.account)
        if not handler.batches(adapter):
            for due in ready:
                due.outcome = self._one(handler, adapter, due)
            return
        tries = 1
        while ready:
            self._write_batch(handler, adapter, ready)
            ready = self._quick_again(ready, tries)
            tries += 1

    def _write_batch(self, handler: Handler[Any], adapter: CrmAdapter, ready: list[Due]) -> None:
        writes = [Write(d.action.idempotency_key, d.payload, d.unsure_since) for d in ready]

        def call() -> list[Any]:
            return handler.perform_many(adapter, writes)

        try:
            results = self._with_inline_retries(call)
        except Exception as exc:  # the whole call failed: every action in it shares the error
            results = [exc] * len(ready)
        for due, result in zip(ready, results, strict=True):
            due.outcome = result

    def _quick_again(self, tried: list[Due], tries: int) -> list[Due]:
        """The writes of a batch that met a blip of their own, after the policy's pause: tried
        again at once, as a single write would be (``RetryPolicy.quick``).

        Not a write whose outcome is unknown: its retry must look for what it wrote, and a CRM
        whose reads lag (HubSpot's search) would hold the whole batch while they catch up. It
        goes back to the queue marked unsure instead.
        """
        quick = [
            (due, self.retry.quick(due.outcome, tries))
            for due in tried
            if isinstance(due.outcome, Exception) and not isinstance(due.outcome, OutcomeUnknown)
        ]
        again = [(due, decision) for due, decision in quick if decision is not None]
        if again:
            self._sleep(max(decision.delay.total_seconds() for _, decision in again))
        return [due for due, _ in again]

    def _one(self, handler: Handler[Any], adapter: CrmAdapter, due: Due) -> dict[str, Any] | Exception:
        key = due.action.idempotency_key
        try:
            self._warn_of_unknown_outcome(adapter, due.action, due.unsure_since)
            return self._with_inline_retries(lambda: handler.perform(adapter, due.payload, key))
        except Exception as exc:  # the retry policy says what becomes of the action
            return exc

    def _uow(self) -> Any:
        return unit_of_work(self.store, actor=self.worker_id, clock=self.clock)

    def _settle_local(self, handler: Handler[Any], due: Due) -> None:
        with self._uow() as uow:
            run = uow.session.get_one(Run, due.action.run_id)
            result = handler.settle(uow, run, due.action, due.payload)
            self._settle(uow, due.action, ActionState.DONE, result=result)

    def _settle_all(self, handler: Handler[Any] | None, group: list[Due]) -> None:
        """Every action's outcome in one unit of work: done (with its after-effects), or as the
        retry policy decides."""
        with self._uow() as uow:
            queue.lock_runs(uow.session, {due.action.run_id for due in group})
            for due in group:
                if isinstance(due.outcome, dict):
                    self._done(uow, handler, due, due.outcome)
                else:
                    self._failed(uow, due, due.outcome or CrmPermanent("nothing was tried"))

    def _done(self, uow: UnitOfWork, handler: Handler[Any] | None, due: Due, result: dict[str, Any]) -> None:
        action = due.action
        if self._settle(uow, action, ActionState.DONE, result=result) and handler is not None:
            handler.after(uow, uow.session.get_one(Run, action.run_id), action, due.payload, result)
        log.info("action %s (%s) done: %s", action.id, action.kind, result)

    def _settle(
        self,
        uow: UnitOfWork,
        action: Action,
        state: ActionState,
        *,
        result: dict[str, Any],
        error: str | None = None,
    ) -> bool:
        """Settle the action if this worker still holds it; audit it; close its run when nothing is left."""
        held = queue.settle_action(
            uow.session, action.id, state, worker_id=self.worker_id, now=uow.now, result=result, error=error
        )
        if not held:
            return False  # our lease ran out and another worker took it over; it settles the action
        crm = uow.session.get_one(Run, action.run_id).crm
        verb = f"{action.kind}.written" if state is ActionState.DONE else f"action.{state}"
        uow.audit(verb, run_id=action.run_id, action_id=action.id, crm=crm, detail=result)
        queue.close_run_if_finished(uow.session, action.run_id, now=uow.now)
        return True

    def _failed(self, uow: UnitOfWork, due: Due, exc: Exception) -> None:
        """Apply the retry policy's decision: skip, park, or back in the queue for later."""
        action = due.action
        decision = self.retry.decide(exc, action.attempts)
        if decision.unexpected:
            log.error("action %s raised unexpectedly", action.id, exc_info=exc)
        if decision.verdict is Verdict.SKIP:
            skipped = {"reason": decision.note}
            self._settle(uow, action, ActionState.SKIPPED, result=skipped, error=f"skipped: {decision.note}")
        elif decision.verdict is Verdict.PARK:
            self._park(uow, action, decision.note)
        else:
            # An attempt that may have written leaves its mark, so the next one looks first.
            unsure = uow.now if isinstance(exc, OutcomeUnknown) else due.unsure_since
            self._later(uow, action, decision, unsure)

    def _park(self, uow: UnitOfWork, action: Action, note: str) -> None:
        held = queue.settle_action(
            uow.session, action.id, ActionState.FAILED, worker_id=self.worker_id, now=uow.now, error=note
        )
        if held:
            crm = uow.session.get_one(Run, action.run_id).crm
            uow.audit("action.failed", run_id=action.run_id, action_id=action.id, crm=crm, error=note)
        log.error("action %s failed after %d attempt(s): %s", action.id, action.attempts, note)

    def _later(self, uow: UnitOfWork, action: Action, decision: Decision, unsure: datetime | None) -> None:
        attempts = action.attempts if decision.counts_attempt else max(action.attempts - 1, 0)
        queue.retry_later(
            uow.session,
            Action,
            action.id,
            worker_id=self.worker_id,
            due=uow.now + decision.delay,
            attempts=attempts,
            note=decision.note,
            unsure_since=unsure,
        )
        log.warning(
            "action %s (%s): %s, due again in %.0fs: %s",
            action.id,
            action.kind,
            decision.verdict,
            decision.delay.total_seconds(),
            decision.note,
        )

    def _warn_of_unknown_outcome(self, adapter: CrmAdapter, action: Action, since: datetime | None) -> None:
        """Taken over from a dead attempt: the adapter must not trust reads that may lag behind it."""
        if since is not None and isinstance(adapter, OutcomeAware):
            log.info("action %s was taken over after its lease ran out at %s", action.id, since.isoformat())
            adapter.outcome_unknown(action.idempotency_key, since)

    def _with_inline_retries(self, call: Callable[[], T]) -> T:
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

        retrying = Retrying(retry=lambda s: quick(s) is not None, wait=pause, reraise=True, sleep=self._sleep)
        return retrying(call)


def _default_sleep(seconds: float) -> None:
    threading.Event().wait(seconds)
