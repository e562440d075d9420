"""Worker heartbeats: each running worker keeps one row in ``workers``.

The row is written when ``Worker.run_forever`` starts, its ``beat_at`` moves forward
every ``BEAT_SECONDS`` while the worker lives, and it is deleted on a clean stop. A
row whose ``beat_at`` has gone stale is a worker that died without stopping (killed,
or its machine lost); ``/metrics`` shows each worker's heartbeat age.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, update

from connector.store import Store, WorkerBeat
from connector.store.db import insert

BEAT_SECONDS = 5.0


def start(store: Store, worker_id: str, now: datetime) -> None:
    """Write this worker's row (again, if one with its id was left behind)."""
    values = {"host": socket.gethostname()[:255], "pid": os.getpid(), "started_at": now, "beat_at": now}
    with store.session() as session:
        session.execute(
            insert(session, WorkerBeat)
            .values(id=worker_id, **values)
            .on_conflict_do_update(index_elements=["id"], set_=values)
        )


def beat(store: Store, worker_id: str, now: datetime) -> None:
    """Move the row's ``beat_at`` forward; write the row again if someone removed it."""
    with store.session() as session:
        moved = cast(
            "CursorResult[Any]",
            session.execute(update(WorkerBeat).where(WorkerBeat.id == worker_id).values(beat_at=now)),
        )
        if moved.rowcount:
            return
    start(store, worker_id, now)


def stop(store: Store, worker_id: str) -> None:
    with store.session() as session:
        session.execute(delete(WorkerBeat).where(WorkerBeat.id == worker_id))
