"""gunicorn's threaded worker with a clock on every request: a client must send its request line,
headers and body within READ_SECONDS, or it gets a 408 and its connection is closed.

Without a clock, a client that sends half a request and waits holds a thread forever: a handful
of such connections (slowloris) stop a server of sync workers. Here each worker has a few threads
for requests whose bytes have begun to arrive; idle connections wait in the worker's poller (no
thread) for at most `keepalive` seconds; and the clock bounds how long any client can hold a
thread. Errors gunicorn raises itself (414, 431, 408, malformed requests) are answered in JSON.
"""

from __future__ import annotations

import json
import socket
import time

from gunicorn.http import errors as http_errors
from gunicorn.workers import gthread

from fixmatch.serve.upload import RequestReadTimeout

FIRST_BYTES_WAIT = 0.5  # a thread waits this long for a new connection's first bytes, then hands it back
DEFAULT_READ_SECONDS = 10.0
REASONS = {400: "Bad Request", 408: "Request Timeout", 414: "URI Too Long",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented"}


class ClockedSocket:
    """The parser's view of a client socket: recv() gives up at the request's deadline.
    While the answer's leftovers are drained (quiet), running out of time just closes."""

    def __init__(self, sock: socket.socket, seconds: float):
        self.sock, self.seconds, self.deadline, self.quiet = sock, seconds, 0.0, False

    def restart(self, since: float) -> None:
        self.deadline = since + self.seconds

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def timeout(self) -> Exception:
        if self.quiet:
            return TimeoutError("drain abandoned")
        return RequestReadTimeout(f"the request did not arrive within {self.seconds:g} s")

    def recv(self, size: int) -> bytes:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.timeout()
        self.sock.settimeout(left)
        try:
            return self.sock.recv(size)
        except TimeoutError:  # socket.timeout
            raise self.timeout() from None
        finally:
            self.sock.settimeout(None)


def describe(exc: Exception) -> tuple[int, str]:
    """gunicorn's own errors -> (status, a message for the client)."""
    if isinstance(exc, RequestReadTimeout):
        return 408, str(exc)
    if isinstance(exc, http_errors.LimitRequestLine):
        return 414, "the request line (the URL) is too long"
    if isinstance(exc, http_errors.LimitRequestHeaders):
        return 431, "too many or too large request headers"
    if isinstance(exc, http_errors.UnsupportedTransferCoding):
        return 501, "unsupported transfer coding"
    if isinstance(exc, http_errors.ParseException) and not isinstance(exc, http_errors.InvalidResponseHeader):
        return 400, "malformed HTTP request"
    return 500, "internal error"


class ClockedThreadWorker(gthread.ThreadWorker):
    read_seconds = DEFAULT_READ_SECONDS  # set by the server from --read-timeout

    def enqueue_req(self, conn):
        # the clock starts when the request is first seen (accepted, or readable again), not when
        # a thread is free: requests queued behind stalled ones must not get fresh time
        conn.clock_start = time.monotonic()
        super().enqueue_req(conn)

    def handle(self, conn):
        wait = getattr(conn, "wait_for_data", None)  # gunicorn >= 24 hands threads unread connections
        if wait is not None and not conn.initialized and not conn.data_ready:
            if not wait(FIRST_BYTES_WAIT):
                return gthread._DEFER  # back to the poller, no thread held
        conn.sock.setblocking(True)
        conn.init()
        self.clock(conn)
        return super().handle(conn)

    def clock(self, conn) -> None:
        unreader = getattr(conn.parser, "unreader", None)
        if unreader is None or not hasattr(unreader, "sock"):
            return  # not an HTTP/1 socket parser (HTTP/2 is off by default)
        if not isinstance(unreader.sock, ClockedSocket):
            unreader.sock = ClockedSocket(unreader.sock, self.read_seconds)
        unreader.sock.restart(getattr(conn, "clock_start", time.monotonic()))  # each request: its own time

    def _keepalive_after(self, conn, keepalive):
        """After the answer: a request that ran out of time closes its connection; otherwise
        gunicorn drains the unread body (bounded) and keeps the connection."""
        sock = getattr(getattr(conn.parser, "unreader", None), "sock", None)
        if not isinstance(sock, ClockedSocket):
            return super()._keepalive_after(conn, keepalive)
        if sock.expired():
            return False
        sock.quiet = True
        try:
            return super()._keepalive_after(conn, keepalive)
        finally:
            sock.quiet = False

    def handle_error(self, req, client, addr, exc):
        status, message = describe(exc)
        if status == 500:
            self.log.exception("Error handling request")
        else:
            self.log.info("refused a request from %s: %s %s", (addr or ("?",))[0], status, exc)
        body = json.dumps({"error": message}).encode()
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "X-Content-Type-Options: nosniff\r\n\r\n").encode()
        try:
            client.settimeout(2)
            client.sendall(head + body)
        except OSError:
            pass
