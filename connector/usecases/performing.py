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
from datetime import datetime
from typing import Any

from tenacity import RetryCallState, Retrying

from adapters import AdapterSet, NoConnection
from adapters.base import BudgetAware, CrmAdapter, OutcomeAware
from connector import actions, queue
from connector.actions.base import Handler
from connector.clock import Clock, utcnow
from connector.errors import CrmPermanent, Deferred
from connector.queue import ActionState
from connector.retry import Decision, RetryPolicy, Verdict
from connector.settings import Settings
from connector.store import Action, Run, Store
from connector.usecases.uow import UnitOfWork, unit_of_work

log = logging.getLogger("offboard.worker")


def adapter_for(adapters: Mapping[str, CrmAdapter], crm: str, account: str | None) -> CrmAdapter:
    """The adapter of this CRM account's connection (``AdapterSet``), or CrmPermanent: none here."""
    try:
        if account is not None and isinstance(adapters, AdapterSet):
            return adapters.for_connection(crm, account)
        return adapters[crm]
    except (KeyError, NoConnection):
        raise CrmPermanent(f"the {crm!r} CRM is not configured on this connector") from None


def deferral(urgent: bool, low_budget: str | None) -> str | None:
    """Why an action waits for its CRM's budget to recover, or None: only work that is not urgent waits."""
    return None if urgent or low_budget is None else f"deferred: {low_budget}"


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
        """Perform ``action`` and settle it; ``reclaimed_since`` when a dead holder's lease ran out then."""
        with self.store.read() as session:
            run = session.get_one(Run, action.run_id)
        try:
            handler = self._handler(action)
            payload = handler.parse(action)
            if handler.local:
                self._settle_local(handler, action, payload)
                return
            adapter = adapter_for(self.adapters, run.crm, run.account)
            reason = deferral(
                handler.urgent, adapter.deferral_reason() if isinstance(adapter, BudgetAware) else None
            )
            if reason is not None:
                raise Deferred(reason)
            with self._uow() as uow:
                handler.before(uow, run, action, payload)
            self._warn_of_unknown_outcome(adapter, action, reclaimed_since)
            key = action.idempotency_key
            result = self._with_inline_retries(lambda: handler.perform(adapter, payload, key))
        except Exception as exc:  # the retry policy says what becomes of the action
            self.failed(action, exc)
        else:
            self._done(handler, action, payload, result)

    def _uow(self) -> Any:
        return unit_of_work(self.store, actor=self.worker_id, clock=self.clock)

    def _handler(self, action: Action) -> Handler[Any]:
        try:
            return self.handlers[action.kind]
        except KeyError:
            raise CrmPermanent(f"unknown action kind {action.kind!r}") from None

    def _settle_local(self, handler: Handler[Any], action: Action, payload: Any) -> None:
        with self._uow() as uow:
            run = uow.session.get_one(Run, action.run_id)
            result = handler.settle(uow, run, action, payload)
            self._settle(uow, action, ActionState.DONE, result=result)

    def _done(self, handler: Handler[Any], action: Action, payload: Any, result: dict[str, Any]) -> None:
        with self._uow() as uow:
            if self._settle(uow, action, ActionState.DONE, result=result):
                handler.after(uow, uow.session.get_one(Run, action.run_id), action, payload, result)
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

    def failed(self, action: Action, exc: Exception) -> None:
        """Apply the retry policy's decision: skip, park, or back in the queue for later."""
        decision = self.retry.decide(exc, action.attempts)
        if decision.unexpected:
            log.error("action %s raised unexpectedly", action.id, exc_info=exc)
        with self._uow() as uow:
            if decision.verdict is Verdict.SKIP:
                skipped = {"reason": decision.note}
                self._settle(
                    uow, action, ActionState.SKIPPED, result=skipped, error=f"skipped: {decision.note}"
                )
            elif decision.verdict is Verdict.PARK:
                self._park(uow, action, decision.note)
            else:
                self._later(uow, action, decision)

    def _park(self, uow: UnitOfWork, action: Action, note: str) -> None:
        held = queue.settle_action(
            uow.session, action.id, ActionState.FAILED, worker_id=self.worker_id, now=uow.now, error=note
        )
        if held:
            crm = uow.session.get_one(Run, action.run_id).crm
            uow.audit("action.failed", run_id=action.run_id, action_id=action.id, crm=crm, error=note)
        log.error("action %s failed after %d attempt(s): %s", action.id, action.attempts, note)

    def _later(self, uow: UnitOfWork, action: Action, decision: Decision) -> None:
        attempts = action.attempts if decision.counts_attempt else max(action.attempts - 1, 0)
        queue.retry_later(
            uow.session,
            Action,
            action.id,
            worker_id=self.worker_id,
            due=uow.now + decision.delay,
            attempts=attempts,
            note=decision.note,
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

        retrying = Retrying(retry=lambda s: quick(s) is not None, wait=pause, reraise=True, sleep=self._sleep)
        return retrying(call)


def _default_sleep(seconds: float) -> None:
    threading.Event().wait(seconds)
