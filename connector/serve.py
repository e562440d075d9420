"""``offboard serve``: the Flask app behind waitress, in processes kept by gunicorn's arbiter,
with the worker as a thread beside the app in each process.

Why this server. A sender that trickles its headers or its body (one byte every few seconds)
must not hold an application thread: with gunicorn's gthread workers a thread reads the
request itself, blocking, with no read timeout, so eight slow connections stopped every
webhook. The alternatives weighed:

- gunicorn ``gthread`` or ``sync``: a thread (or the process) is taken as soon as the first
  byte arrives and waits for the rest. A read timeout would only shorten the stall.
- gunicorn ``gevent``/``eventlet``: cheap per connection, but they monkey-patch the whole
  process: the worker thread beside the app becomes a greenlet, and every SQLite call, every
  psycopg call without a green wait, and every playbook render blocks all intake while it runs.
- uvicorn/hypercorn with a WSGI adapter: the body is streamed into the application thread as
  it arrives, so a slow body still holds a thread.
- waitress (chosen): its single-threaded asynchronous front reads each whole request, headers
  and body, before handing it to the thread pool; a large body is spooled to a temporary
  file. A slow sender costs a socket and a small buffer, never a thread. Idle connections are
  dropped after ``CHANNEL_TIMEOUT``; the body limit is enforced while the body arrives.

Waitress serves one process. For ``--workers N`` gunicorn's arbiter stays the process
manager (it binds the socket, forks, restarts a child that dies, forwards SIGTERM and SIGKILLs
a child still busy after the graceful timeout); ``WaitressWorker`` is the small worker class
that runs waitress's front on the arbiter's sockets instead of gunicorn's own HTTP parser.

Webhook deliveries never reach the thread pool: the front verifies, stores and answers them
itself, those read in one turn of its loop together (``FrontDispatcher``).

Each process builds its own services after the fork (engines must not cross a fork) and,
unless ``--no-worker``, runs one outbox worker thread. On SIGTERM the process stops
accepting, answers the requests it has read, and the worker thread finishes the row in hand
and puts back the rest (``Worker.run_forever``), all within the graceful timeout.

Access lines are written by the app itself (logger ``offboard.access``), so neither gunicorn
nor waitress writes one. In front of this, the reverse proxy bounds how long a client may take
(docs/deploy.md); this server stays answerable even without one.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.workers.base import Worker as GunicornWorker
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ThreadedTaskDispatcher, WSGITask

from connector.inbox import serve_in_turn
from connector.logs import gunicorn_logger_class
from connector.services import build
from connector.settings import Settings
from connector.web import MAX_BODY_BYTES, WEBHOOK_PATHS, create_app

log = logging.getLogger("offboard.serve")

# Application threads per process, for everything but webhook deliveries (which the front
# answers itself, see FrontDispatcher): pages, installs, health checks, metrics. They only ever
# see whole requests; a page that calls the CRM (an install's callback) holds one meanwhile.
THREADS = 16
CONNECTION_LIMIT = 1000  # open connections per process before it stops accepting for a moment
CHANNEL_TIMEOUT = 30  # seconds a connection may stay silent (no byte either way) before it is closed
# Waitress refuses a body past this while it arrives (413) and counts chunk framing too; the
# app then applies the exact MAX_BODY_BYTES to what waitress let through.
FRONT_BODY_LIMIT = MAX_BODY_BYTES + 64 * 1024
LOOP_SECONDS = 0.5  # how often the front checks for a stop signal when nothing else wakes it
BEAT_SECONDS = 1.0  # how often it tells the arbiter it is alive (the arbiter waits 60 s)
GRACEFUL_TIMEOUT = 30  # seconds from SIGTERM to the arbiter's SIGKILL
GC_YOUNG_THRESHOLD = 10_000  # new objects between the garbage collector's youngest passes (Python's: 700)
GRACE_MARGIN = 5.0  # seconds of the graceful timeout kept for the process to exit after the worker


def front_options() -> dict[str, Any]:
    """Waitress's adjustments for one process."""
    return {
        "threads": THREADS,
        "connection_limit": CONNECTION_LIMIT,
        "channel_timeout": CHANNEL_TIMEOUT,
        "max_request_body_size": FRONT_BODY_LIMIT,
        "asyncore_use_poll": True,  # select() stops at 1024 descriptors; poll() does not
        "ident": "offboard",
        "expose_tracebacks": False,
    }


class WaitressWorker(GunicornWorker):  # type: ignore[misc]
    """A gunicorn worker process whose HTTP front is waitress (see the module docstring)."""

    def run(self) -> None:
        # Waitress warns "Task queue depth is N" for every request that waits for a free thread:
        # in a burst of page views a line each. Queueing shows in the answers' durations (the
        # access log) instead.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        # What the process holds now (the app, its settings, the libraries: some 130,000 objects)
        # lives as long as the process: the garbage collector's full passes, each a pause of
        # every thread for 60-80 ms under a burst, stop looking at it. And its youngest pass,
        # which pauses every thread too, runs after 10,000 new objects rather than 700 (on the
        # ingest bench, Postgres, about 7% more deliveries a second, and 11% more from the
        # freeze, three runs each side by side).
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        front: dict[int, Any] = {}
        tasks = FrontDispatcher(self.wsgi.extensions.get(WEBHOOK_PATHS, ()))
        tasks.set_thread_count(THREADS)
        server = create_server(
            self.wsgi,
            map=front,
            sockets=[listener.sock for listener in self.sockets],
            _dispatcher=tasks,  # waitress's way to give its servers a dispatcher of one's own
            **front_options(),
        )
        for dispatcher in front.values():
            if isinstance(dispatcher, BaseWSGIServer):
                dispatcher.channel_class = KeepAliveChannel
        beat = 0.0
        try:
            while self.alive:
                # One loop turn per poll: under load thousands a second. The heartbeat (a write
                # to a file's times) and the parent check are due only every BEAT_SECONDS.
                if time.monotonic() - beat >= BEAT_SECONDS:
                    beat = time.monotonic()
                    self.notify()
                    if self.ppid != os.getppid():
                        log.warning("the process manager is gone; this process stops")
                        break
                wasyncore.loop(timeout=LOOP_SECONDS, map=front, use_poll=True, count=1)
                tasks.serve_webhooks()
            deadline = time.monotonic() + max(float(self.cfg.graceful_timeout) - GRACE_MARGIN, 1.0)
            self.offboard_deadline = deadline
            _signal_worker(self)  # the worker thread winds down while the last answers go out
            _drain(front, tasks, deadline)
        finally:
            server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
            wasyncore.close_all(front)


class KeepAliveTask(WSGITask):  # type: ignore[misc]
    """Waitress's task, keeping the connection open after an answer without a body (204, 304).

    Waitress closes an HTTP/1.1 connection after any answer without a Content-Length, and never
    sends one with a 204: so every HubSpot delivery (answered 204) cost the sender a new
    connection, and this process an accept, as if keep-alive were off. An answer that has no
    body needs no length to end it (RFC 9112, 6.3), so the connection stays open, unless the
    client asked to close it or speaks HTTP/1.0.
    """

    def set_close_on_finish(self) -> None:
        asked = self.request.headers.get("CONNECTION", "").lower() == "close"
        if self.has_body or self.version != "1.1" or asked:
            super().set_close_on_finish()


class FrontDispatcher(ThreadedTaskDispatcher):  # type: ignore[misc]
    """Webhook deliveries answered by the front's own thread, the rest by the thread pool.

    A ``POST`` to a source's path is verified, stored and answered without leaving the front:
    the deliveries read in one turn of the front's loop are served in turn and their events
    stored together, one transaction for the round (``connector.inbox.serve_in_turn``). Handing
    each to a pool thread, which then blocked until a shared transaction committed and was
    woken again, cost more of the machine than the delivery's own work: on the ingest bench
    (2 web processes, 32 connections) this answers about twice as many deliveries a second
    (SQLite: 46% of a bare Flask endpoint's rate before, 87% after). The answering
    of a delivery never waits on the network (the receiver calls no CRM), so the front waits
    only for the database, as the pool's threads did. Anything else (pages, installs, the
    health check) still runs on the pool, so a slow page never holds the front.
    """

    def __init__(self, webhook_paths: Iterable[str]) -> None:
        super().__init__()
        self.webhook_paths = frozenset(webhook_paths)
        self._ready: list[HTTPChannel] = []

    def add_task(self, task: Any) -> None:
        # Called by the front with the channel's request lock held: a delivery is only noted here.
        requests = getattr(task, "requests", None)  # a channel's requests, the first one to answer now
        request = requests[0] if requests else None
        if request is not None and request.error is None and self.takes(request.command, request.path):
            self._ready.append(task)
        else:
            super().add_task(task)

    def takes(self, method: str, path: str) -> bool:
        return method == "POST" and path in self.webhook_paths

    def serve_webhooks(self) -> None:
        """Answer the deliveries read so far, and those behind them on the same connections."""
        while self._ready:
            ready, self._ready = self._ready, []
            serve_in_turn([channel.service for channel in ready])


class KeepAliveChannel(HTTPChannel):  # type: ignore[misc]
    task_class = KeepAliveTask


def _drain(front: dict[int, Any], tasks: FrontDispatcher, deadline: float) -> None:
    """Stop accepting; answer every request already read in full; drop connections still sending."""
    for dispatcher in list(front.values()):
        if isinstance(dispatcher, BaseWSGIServer):
            dispatcher.accepting = False
    while time.monotonic() < deadline and any(
        isinstance(channel, HTTPChannel) and (channel.requests or channel.total_outbufs_len)
        for channel in list(front.values())
    ):
        wasyncore.loop(timeout=0.1, map=front, use_poll=True, count=1)
        tasks.serve_webhooks()


class Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any], *, with_worker: bool) -> None:
        self.settings = settings
        self.options = options
        self.with_worker = with_worker
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn >= 25.1 opens a control socket at one path per user: servers side by side
            # would take it from each other, and nothing here uses it.
            self.cfg.set("control_socket_disable", True)
        self.cfg.set("logger_class", gunicorn_logger_class())  # its lines go through ours (connector.logs)
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


def _signal_worker(gunicorn_worker: Any) -> None:
    stop, _thread = getattr(gunicorn_worker, "offboard_stop", (None, None))
    if stop is not None:
        stop.set()


def _stop_worker(_server: Any, gunicorn_worker: Any) -> None:
    """The process is exiting: the outbox worker stops claiming, finishes the row in hand
    and puts back the rest (``Worker.run_forever``), within the graceful timeout."""
    stop, thread = getattr(gunicorn_worker, "offboard_stop", (None, None))
    if stop is None or thread is None:
        return
    stop.set()
    fallback = time.monotonic() + max(float(gunicorn_worker.cfg.graceful_timeout) - GRACE_MARGIN, 1.0)
    deadline = getattr(gunicorn_worker, "offboard_deadline", fallback)
    thread.join(timeout=max(deadline - time.monotonic(), 1.0))
    if thread.is_alive():
        log.warning(
            "the worker thread is still busy as the process exits; "
            "what it holds comes back to the queue when its lease runs out"
        )


def serve(settings: Settings, *, host: str, port: int, workers: int, with_worker: bool) -> None:
    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": WaitressWorker,
        "timeout": 60,  # a process that stops telling the arbiter it is alive is replaced
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "accesslog": None,  # the app writes the access lines (logger offboard.access)
        "loglevel": settings.log_level.lower(),
        "proc_name": "offboard",
    }
    Server(settings, options, with_worker=with_worker).run()
