"""``offboard serve``: gunicorn serving the Flask app, with the worker as a thread beside it.

Each gunicorn worker process builds its own services after the fork (engines
must not cross a fork) and, unless ``--no-worker``, runs one outbox worker
thread that stops with the process.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from gunicorn.app.base import BaseApplication

from connector.services import build
from connector.settings import Settings
from connector.web import create_app

log = logging.getLogger("offboard.serve")

GRACE_MARGIN = 5.0  # seconds of gunicorn's graceful timeout left for the process to exit after the worker


class Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any], *, with_worker: bool) -> None:
        self.settings = settings
        self.options = options
        self.with_worker = with_worker
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        if self.with_worker:
            self.cfg.set("post_worker_init", _start_worker)
            self.cfg.set("worker_exit", _stop_worker)

    def load(self) -> Any:
        return create_app(build(self.settings))


def _start_worker(gunicorn_worker: Any) -> None:
    services = gunicorn_worker.wsgi.extensions["offboard"]
    stop = threading.Event()
    worker = services.worker()
    thread = threading.Thread(target=worker.run_forever, args=(stop,), name="offboard-worker", daemon=True)
    gunicorn_worker.offboard_stop = (stop, thread)
    thread.start()


def _stop_worker(_server: Any, gunicorn_worker: Any) -> None:
    """The gunicorn worker is exiting: the outbox worker stops claiming, finishes the row in hand
    and puts back the rest (``Worker.run_forever``), within gunicorn's graceful timeout."""
    stop, thread = getattr(gunicorn_worker, "offboard_stop", (None, None))
    if stop is None or thread is None:
        return
    stop.set()
    thread.join(timeout=max(float(gunicorn_worker.cfg.graceful_timeout) - GRACE_MARGIN, 1.0))
    if thread.is_alive():
        log.warning(
            "the worker thread is still busy as the process exits; "
            "what it holds comes back to the queue when its lease runs out"
        )


def serve(settings: Settings, *, host: str, port: int, workers: int, with_worker: bool) -> None:
    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": 8,
        "timeout": 60,
        "graceful_timeout": 30,
        "accesslog": "-",
        "loglevel": settings.log_level.lower(),
        "proc_name": "offboard",
    }
    Server(settings, options, with_worker=with_worker).run()
