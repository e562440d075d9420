"""Accept inbound events: store them once, before anything answers the sender."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connector import queue
from connector.store import Event, Store

KNOWN_CHUNK = 500  # keys per query: well under every database's limit on bound parameters


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
        return store_items(session, items, now)


def store_items(session: Session, items: list[Incoming], now: datetime) -> list[Accepted]:
    """``accept`` in the caller's transaction."""
    return [_accept_one(session, item, now) for item in items]


def _accept_one(session: Session, item: Incoming, now: datetime) -> Accepted:
    new_id = queue.insert_event(
        session,
        source=item.source,
        account=item.account,
        event_key=item.event_key,
        kind=item.kind,
        payload=item.payload,
        now=now,
    )
    if new_id is not None:
        return Accepted(new_id, duplicate=False)
    existing = session.execute(
        select(Event.id).filter_by(source=item.source, account=item.account, event_key=item.event_key)
    ).scalar_one()
    return Accepted(int(existing), duplicate=True)


def known(store: Store, source: str, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (account, event key) pairs the inbox already holds for ``source``."""
    wanted = sorted(set(keys))
    found: set[tuple[str, str]] = set()
    for start in range(0, len(wanted), KNOWN_CHUNK):
        chunk = wanted[start : start + KNOWN_CHUNK]
        with store.read() as session:
            rows = session.execute(
                select(Event.account, Event.event_key).where(
                    Event.source == source, Event.event_key.in_([key for _, key in chunk])
                )
            ).all()
        found.update((account, key) for account, key in rows)
    return found & set(wanted)
