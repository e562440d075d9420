"""Accept inbound events: store them once, before anything answers the sender."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connector.store import Event, Store
from connector.store.db import insert


@dataclass(frozen=True)
class Incoming:
    source: str
    account: str
    event_key: str
    kind: str
    payload: Any


@dataclass(frozen=True)
class Accepted:
    event_id: int
    duplicate: bool


def accept(store: Store, items: list[Incoming], now: datetime) -> list[Accepted]:
    """Store every item in one transaction; a redelivered item is recognised, not stored twice."""
    with store.session() as session:
        return [_accept_one(session, item, now) for item in items]


def _accept_one(session: Session, item: Incoming, now: datetime) -> Accepted:
    values = {
        "source": item.source,
        "account": item.account,
        "event_key": item.event_key,
        "kind": item.kind,
        "payload": item.payload,
        "received_at": now,
        "available_at": now,
        "state": "pending",
        "attempts": 0,
    }
    statement = (
        insert(session, Event)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["source", "account", "event_key"])
        .returning(Event.id)
    )
    new_id = session.execute(statement).scalar()
    if new_id is not None:
        return Accepted(int(new_id), duplicate=False)
    existing = session.execute(
        select(Event.id).filter_by(source=item.source, account=item.account, event_key=item.event_key)
    ).scalar_one()
    return Accepted(int(existing), duplicate=True)
