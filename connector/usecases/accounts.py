"""Which settings plan an account's deals: an installed account's own over the deployment's."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from connector.connections import AccountConfig, AccountSettings
from connector.planner import PlanContext
from connector.settings import Settings
from connector.store.tables import AccountConnection


def account_settings(session: Session, settings: Settings, crm: str, account: str) -> AccountSettings | None:
    """An installed account's own settings over the deployment's, or None: not installed here."""
    found = session.execute(
        select(AccountConnection.config).where(
            AccountConnection.crm == crm, AccountConnection.account == account
        )
    ).first()
    return None if found is None else AccountConfig.model_validate(found[0] or {}).over(settings)


def account_context(
    session: Session, settings: Settings, crm: str, account: str, now: datetime
) -> PlanContext:
    """What plans for this account's deals: its roles, fallback owner and time zone (its own where
    it is installed here and sets them, else the deployment's)."""
    return PlanContext.from_settings(settings, now, account_settings(session, settings, crm, account))
