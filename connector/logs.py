"""Logging for every process: one format (text or JSON lines), and no credential in any line.

``configure_logging(settings)`` is called once at start-up by the CLI commands
and the server. It puts one handler on the root logger (every logger that
propagates writes through it: ours, Flask's, werkzeug's, waitress', the SDKs')
and installs the same redaction on the handlers of loggers that do not
propagate. What is redacted, in the message, the exception text and the
finished line alike:

- personal link tokens: ``/s/<token>`` and ``/r/<token>`` are credentials for
  one client (they answer a survey or introduce someone);
- the value of any ``key=`` query parameter (the Salesforce outbound-message key
  is a query value because outbound messages cannot carry headers), and of the
  OAuth query values ``code``, ``token``, ``access_token``, ``refresh_token`` and
  ``client_secret`` (an install's callback carries a one-time code);
- the literal value of every secret setting, wherever it appears.

``OFFBOARD_LOG_FORMAT=json`` writes one JSON object per line (python-json-logger)
with ``time``, ``level``, ``logger`` and ``message``, plus the fields a record
carries as ``extra`` (the access log's method, path, status, duration).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Iterable
from typing import IO, Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from connector.settings import Settings

REDACTED = "[redacted]"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# itsdangerous tokens are URL-safe base64 with dots; anything after /s/ or /r/ up to a delimiter.
_LINK = re.compile(r"(/[sr]/)[A-Za-z0-9_.~%=+-]{6,}")
# The value ends where a query value ends, and before a backslash (a quote escaped in a JSON line).
_KEY = re.compile(
    r"((?:[?&;]|%3[Ff]|%26)(?:key|code|token|access_token|refresh_token|client_secret)(?:=|%3[Dd]))"
    r"[^&#\s\"'<>\\]+",
    re.IGNORECASE,
)
_MIN_SECRET = 6  # shorter values would blank out ordinary words


class Redactor:
    """Removes link tokens, ``key=`` values and known secret values from text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)
        self._values = tuple(values)
        self._secrets = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def __call__(self, text: str) -> str:
        # Every log line passes here three times; most hold neither a link nor a query value,
        # and a substring test is far cheaper than a failed regex search.
        if "/s/" in text or "/r/" in text:
            text = _LINK.sub(lambda m: m.group(1) + REDACTED, text)
        if "=" in text or "%3" in text:  # a value follows "=" or its escape %3D
            text = _KEY.sub(lambda m: m.group(1) + REDACTED, text)
        # A substring test per secret is far cheaper than a search of the alternation, which
        # tries every value at every position; the search runs only when one is there.
        if self._secrets is not None and any(value in text for value in self._values):
            text = self._secrets.sub(REDACTED, text)
        return text


_TOKENS_AND_KEYS = Redactor()


def redact_path(text: str) -> str:
    """A request path (and query) with link tokens and ``key=`` values replaced."""
    return _TOKENS_AND_KEYS(text)


class RedactingFilter(logging.Filter):
    """Rewrites each record before any formatter sees it: message, exception text and string extras."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        message = record.getMessage()
        # A record passes here when it is made and again at each handler: its message is not
        # searched again once this redactor has, unless it changed since. The extras (set after
        # the record is made) and any exception text are.
        if fields.get(_REDACTED) != (self.redact, message):
            message = self.redact(message)
        record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for name in fields.keys() - _STANDARD:
            if isinstance(value := fields[name], str):
                fields[name] = self.redact(value)
        fields[_REDACTED] = (self.redact, message)
        return True  # redacting twice changes nothing: every handler may carry this filter


_REDACTED = "offboard_redacted"  # on a record: the redactor that redacted it, and its message then
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", _REDACTED}


class TextFormatter(logging.Formatter):
    """The plain format, with a last redaction pass over the finished line."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line, with a last redaction pass over the finished line."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=[*RESERVED_ATTRS, _REDACTED],  # the redaction's mark is not a field
        )
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


def redactor_for(settings: Settings) -> Redactor:
    """A redactor that also knows the literal values of the deployment's secret settings."""
    return Redactor(settings.secret_values())  # the CRM plugins' secrets included


def configure_logging(
    settings: Settings, stream: IO[str] | None = None, *, background: bool = False
) -> logging.Handler:
    """Route every logger through one redacting handler on ``stream`` (stderr); returns the handler.

    Records are also redacted as they are made (a record factory), so a handler added
    later by a library or a test sees no credential either. ``background`` (the web server):
    lines are formatted where they are logged and written by one thread (``BackgroundWriter``).
    """
    redact = redactor_for(settings)
    _redact_at_creation(RedactingFilter(redact))
    handler: logging.Handler
    if background:
        handler = BackgroundWriter(stream)
    else:
        handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.set_name("offboard")
    formatter: logging.Formatter = (
        JsonLineFormatter(redact) if settings.log_format == "json" else TextFormatter(redact)
    )
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter(redact))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "offboard"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for logger in _loggers_with_own_handlers():
        for own in logger.handlers:
            own.addFilter(RedactingFilter(redact))
            own.setFormatter(formatter)
    return handler


class BackgroundWriter(logging.Handler):
    """Lines formatted (and redacted) in the thread that logs, written to the stream by one thread
    of their own, as many at a time as have queued.

    Why. Under a burst of webhooks every request writes an access line, and writing it there
    meant taking the handler's lock and making a system call per line, in each of the
    server's threads: both hand the interpreter's lock to another thread and wait to get it
    back, which on a busy machine cost more than answering the request. Here a request only
    puts its line on a queue. The writer thread is started in the process that logs (a
    thread does not survive the fork into a web process), and what has queued is written at
    exit. The lines of the last ``GATHER_SECONDS`` before the process is killed outright may be lost.
    (logging.handlers.QueueListener hands records to a handler one by one, a write each.)
    """

    BATCH = 256  # lines per write, at most
    # After the first line of a quiet spell, how long the writer lets more gather before writing.
    # Under a burst a line per request would otherwise wake the writer for each line (a system
    # call to wake it, and the interpreter's lock handed to it and back): more than the request's
    # own logging cost. A line is written at most this late.
    GATHER_SECONDS = 0.05

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self._stream = stream
        self._pid: int | None = None  # the process whose writer thread runs
        self._queue_pid = os.getpid()
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: emit only puts on a queue, which is safe from any thread.
        passed = self.filter(record)
        if passed:
            self.emit(record)
        return bool(passed)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if self._pid != os.getpid():
            self._start()
        self._queue.put(line)

    def flush(self) -> None:
        """Return once every line queued before the call is written (the writer's queue drained)."""
        with self._starting:
            thread = self._thread
            if thread is None or self._pid != os.getpid():
                return
            self._queue.put(None)  # the writer writes what is before it, then stops
            thread.join(timeout=5)
            self._thread, self._pid = None, None  # the next line starts a writer on the same queue

    def close(self) -> None:
        self.flush()
        super().close()

    def _start(self) -> None:
        with self._starting:
            if self._pid == os.getpid():
                return
            if self._queue_pid != os.getpid():  # one inherited across a fork may hold a lock
                self._queue, self._queue_pid = queue.SimpleQueue(), os.getpid()
            self._thread = threading.Thread(target=self._write_forever, name="offboard-log", daemon=True)
            self._thread.start()
            self._pid = os.getpid()
            atexit.register(self.flush)

    def _write_forever(self) -> None:
        pending = self._queue
        drained = True
        while True:
            lines = [pending.get()]
            if drained and lines[0] is not None:
                time.sleep(self.GATHER_SECONDS)
            drained = False
            while lines[-1] is not None and len(lines) < self.BATCH:
                try:
                    lines.append(pending.get_nowait())
                except queue.Empty:
                    drained = True  # a full batch goes on with the next at once
                    break
            stop = lines[-1] is None
            text = "".join(f"{line}\n" for line in lines if line is not None)
            stream = self._stream if self._stream is not None else sys.stderr
            # A closed or broken stream loses the lines, as logging's own handlers do; never the app.
            with contextlib.suppress(Exception):
                stream.write(text)
                stream.flush()
            if stop:
                return


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is written (as logging's last resort does),
    so a command run inside another program that swaps stderr never writes to a closed stream."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr


_base_factory = logging.getLogRecordFactory()


def _redact_at_creation(redacting: RedactingFilter) -> None:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = _base_factory(*args, **kwargs)
        # A malformed call (bad arguments) is left to the handler's filter and its error report.
        with contextlib.suppress(Exception):
            redacting.filter(record)
        return record

    logging.setLogRecordFactory(factory)


def _loggers_with_own_handlers() -> list[logging.Logger]:
    return [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and logger.handlers and not logger.propagate
    ]


def route_through_root(*names: str) -> None:
    """Loggers that a server set up with handlers of their own write through ours instead
    (gunicorn's error log): the same format and the same redaction as every other line."""
    for name in names:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def gunicorn_logger_class() -> type:
    """gunicorn's logger, with its lines sent through ours after each of its set-ups (start, reload)."""
    from gunicorn.glogging import Logger

    class ThroughRoot(Logger):  # type: ignore[misc]
        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            route_through_root("gunicorn.error", "gunicorn.access")

    return ThroughRoot
