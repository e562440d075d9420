"""Connections that trickle a request one byte at a time and never finish it."""

from __future__ import annotations

import socket
import threading

SLOW_HEADERS = 25
SLOW_BODIES = 25
TRICKLE_SECONDS = 2.0


class SlowClients:
    """Connections that send one byte every ``TRICKLE_SECONDS``, never finishing their request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, name="slow-clients", daemon=True)

    def open(self) -> SlowClients:
        request_line = b"POST /webhooks/generic HTTP/1.1\r\n"
        for n in range(SLOW_HEADERS + SLOW_BODIES):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            if n < SLOW_HEADERS:  # a request line, then headers that never end
                sock.sendall(request_line + b"Host: 127.0.0.1\r\nX-Slow: ")
            else:  # whole headers, then a body that never arrives in full
                sock.sendall(
                    request_line + b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100000\r\n\r\n{"
                )
            sock.setblocking(False)  # a byte at a time from here on; peeking must not wait
            self.sockets.append(sock)
        self._thread.start()
        return self

    def _trickle(self) -> None:
        while not self._stop.wait(TRICKLE_SECONDS):
            for sock in self.sockets:
                try:
                    sock.send(b"a")
                except OSError:
                    continue

    def still_open(self) -> int:
        """How many of them the server has not closed."""
        open_ = 0
        for sock in self.sockets:
            try:
                peeked = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                open_ += 1
                continue
            except OSError:
                continue
            open_ += bool(peeked)
        return open_

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self.sockets:
            sock.close()
