"""gunicorn's threaded worker, with requests read in full before a thread is involved, and a clock.

Without either, a client that sends half a request and waits holds a thread forever: a handful of
such connections (slowloris) stop a server of sync workers. Here the worker's event loop (one
thread, non-blocking sockets) collects each request's bytes - headers, and a body of up to
MAX_BUFFERED bytes - and only a complete request is handed to the thread pool, so stalled clients
cost a little memory, never a thread. A client must deliver its request within `read_seconds` of
its first appearance, or it gets a JSON 408 and is closed; the same clock guards the rare request
read by a thread (a chunked body, a declared body too large to buffer, which the app refuses).
Errors gunicorn raises itself (414, 431, malformed requests) are answered in JSON too.

Nothing waits unseen in the kernel's backlog: an idle worker takes a new connection at once, a busy
one looks for new connections itself every few milliseconds, and a connection over the caps (per
client address, per worker) is taken and answered 503 at once; the health check gets a way in past
the worker's cap (TRIAGE).
"""

from __future__ import annotations

import errno
import json
import re
import selectors
import socket
import time
from collections import Counter
from functools import partial

from gunicorn.http import errors as http_errors
from gunicorn.workers import gthread

from fixmatch.serve.limits import CLIENT_CONNECTIONS
from fixmatch.serve.upload import RequestReadTimeout

TRIAGE = 16  # per worker: connections over worker_connections given HEALTH_WAIT to show they are a health check
HEALTH_WAIT = 1.0
HEALTH_CHECK = re.compile(rb"(GET|HEAD) /healthz(\?[^ ]*)? HTTP/1\.[01]\r\n")
# A worker with n open connections looks at the listener every min(n, LOOK_STEPS) x ACCEPT_STEP: the
# less loaded worker looks more often and takes more of the new connections (a cap of 4 instead of
# 25, measured at c=32: p95 4.7 s instead of 2.5-3.5 s, the workers' queues uneven)
ACCEPT_STEP, LOOK_STEPS = 0.01, 25
ACCEPT_BATCH = 64  # connections taken from the backlog per look
FIRST_BYTES_WAIT = 0.5  # a thread waits this long for a new connection's first bytes, then hands it back
DEFAULT_READ_SECONDS = 10.0
MAX_HEAD = 4094 + 50 * 8192  # request line and headers within gunicorn's limits (else its 414/431)
MAX_BUFFERED = 1024 * 1024 + 96 * 1024  # the largest body the app accepts (1 MB file + multipart envelope)
CHUNKED = re.compile(rb"\r\ntransfer-encoding[ \t]*:[ \t]*chunked[ \t]*\r\n", re.IGNORECASE)
CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,8})(?:[ \t]*;[^\r\n]*)?")  # a size in hex (8 digits: 4 GB), extensions
MAX_CHUNK_LINE = 1024  # a chunk-size line with its extensions
TOO_LARGE = "the upload is too large; the limit is 1 MB"
EXPECT_CONTINUE = re.compile(rb"\r\nexpect[ \t]*:[ \t]*100-continue[ \t]*\r\n", re.IGNORECASE)
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d{1,12})[ \t]*(?=\r\n)", re.IGNORECASE)
REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


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
            self.sock.settimeout(self.seconds)  # the answer's writes get a deadline too


def request_arrived(data: bytes) -> bool:
    """Whether `data` holds a whole request, or as much of one as the event loop should collect
    (headers over the limit, a chunked or too large body: a thread's parser takes it from there)."""
    end = data.find(b"\r\n\r\n")
    if bare_lf(data[: end if end >= 0 else len(data)]):
        return True  # a line ended by LF alone: the parser refuses it now (400), no use waiting for CRLF CRLF
    if end < 0:
        return len(data) > MAX_HEAD
    head = data[: end + 2]
    if b"transfer-encoding" in head.lower():
        return not CHUNKED.search(head) or chunked_arrived(data, end + 4) is not False
    found = CONTENT_LENGTH.search(head)
    length = int(found.group(1)) if found else 0
    return length > MAX_BUFFERED or len(data) >= end + 4 + length


def chunked_arrived(data: bytes, start: int) -> bool | tuple[int, str]:
    """A chunked body from `start`: True when whole, False while more is to come, or (status,
    message) when it can be refused now - a size line that is not hex (-5), too long (an extension
    of 100 KB), or sizes adding up past MAX_BUFFERED (2^96) - rather than by a thread that waits."""
    i, total = start, 0
    while True:
        line_end = data.find(b"\r\n", i)
        if line_end < 0:
            return (
                (400, "malformed chunked body: a chunk-size line is too long")
                if len(data) - i > MAX_CHUNK_LINE
                else False
            )
        line = CHUNK_LINE.fullmatch(data, i, line_end)
        if line is None or line_end - i > MAX_CHUNK_LINE:
            return 400, "malformed chunked body: a chunk size must be a short hexadecimal number"
        size = int(line.group(1), 16)
        total += size
        if total > MAX_BUFFERED:
            return 413, TOO_LARGE
        if size == 0:  # the last chunk, then optional trailer lines and an empty line
            rest = data[line_end + 2 :]
            return rest.startswith(b"\r\n") or b"\r\n\r\n" in rest
        i = line_end + 2 + size + 2
        if i > len(data):
            return False


def bare_lf(head: bytes) -> bool:
    return head.count(b"\n") != head.count(b"\r\n")


def framing_problem(data: bytes) -> tuple[int, str] | None:
    """A chunked body the event loop can refuse itself (status, message), or None."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or not CHUNKED.search(data[: end + 2]):
        return None
    verdict = chunked_arrived(bytes(data), end + 4)
    return verdict if isinstance(verdict, tuple) else None


def json_error(status: int, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "X-Content-Type-Options: nosniff\r\n\r\n"
    ).encode() + body


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


class ClientConn(gthread.TConn):
    """A connection that tells the worker when it closes (gunicorn closes connections in many places)."""

    def __init__(self, cfg, sock, client, server, on_close):
        super().__init__(cfg, sock, client, server)
        self.address = client[0] if isinstance(client, tuple) else ""
        self.on_close, self.triage = on_close, False

    def close(self, graceful=False):
        if self.on_close is not None:
            self.on_close(self)
            self.on_close = None
        super().close(graceful)


def refuse(sock: socket.socket, message: str) -> None:
    """503 and close, never blocking the event loop."""
    answer_and_close(sock, json_error(503, message))


def answer_and_close(sock: socket.socket, answer: bytes) -> None:
    """Send a short answer and close, never blocking the event loop. What the client already sent is
    read and dropped first: closing a socket with unread data resets it, and the client may lose the answer."""
    try:
        sock.setblocking(False)
        try:
            for _ in range(4):
                if not sock.recv(65536):
                    break
        except (BlockingIOError, InterruptedError):
            pass
        sock.send(answer)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    sock.close()


class ClockedThreadWorker(gthread.ThreadWorker):
    read_seconds = DEFAULT_READ_SECONDS  # set by the server from --read-timeout
    client_connections = CLIENT_CONNECTIONS  # set by the server from --client-connections (0: no cap)

    def init_process(self):
        self.arriving = {}  # connection -> deadline, for requests the event loop is still reading
        self.per_client = Counter()  # open connections per client address
        self.next_look = 0.0  # when a worker with connections next looks at the listener itself
        super().init_process()

    # ---- who takes a new connection ----------------------------------------------------------
    def set_accept_enabled(self, enabled):
        """An idle worker (no connection open) waits on the listener and takes a new connection at
        once; a worker with n connections looks at the listener itself every min(n, LOOK_STEPS) x
        ACCEPT_STEP (look_at_listeners), so an idle or less busy worker usually gets there first,
        and none is left waiting in the kernel's backlog while every worker is busy. gunicorn's
        `enabled` (fewer than worker_connections open) is not the rule here: a connection over the
        caps is taken and refused at once (accept), not left in the backlog."""
        idle = self.alive and self.nr_conns == 0
        if self._accepting and not idle:
            self.next_look = time.monotonic() + self.look_interval()
        super().set_accept_enabled(idle)

    def look_interval(self) -> float:
        return ACCEPT_STEP * min(max(self.nr_conns, 1), LOOK_STEPS)

    def wait_for_and_dispatch_events(self, timeout):
        self.set_accept_enabled(True)
        if self.alive and not self._accepting:
            timeout = max(0.0, min(timeout, self.next_look - time.monotonic()))
        super().wait_for_and_dispatch_events(timeout)
        if self.alive and not self._accepting and time.monotonic() >= self.next_look:
            self.look_at_listeners()

    def look_at_listeners(self) -> None:
        for listener in self.sockets:
            listener.setblocking(False)
            for _ in range(ACCEPT_BATCH):
                if not self.accept(listener):
                    break
        self.next_look = time.monotonic() + self.look_interval()

    def accept(self, listener) -> bool:
        """Take one connection from the backlog (False: none was waiting). Up to worker_connections
        are served; the next TRIAGE get HEALTH_WAIT to show they are a health check (answered as
        usual) and are refused otherwise; beyond those, and past a client's own cap, a 503 at once."""
        try:
            sock, client = listener.accept()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self.log.warning("cannot take a connection now: %s", e)  # out of descriptors: the next look
                return False
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return e.errno == errno.ECONNABORTED
        conn = ClientConn(self.cfg, sock, client, listener.getsockname(), self.closed)
        if self.client_connections and self.per_client[conn.address] >= self.client_connections:
            refuse(sock, f"too many connections from your address (at most {self.client_connections}); try again")
            return True
        if self.nr_conns >= self.worker_connections:
            self.shed_one()
        if self.nr_conns >= self.worker_connections + TRIAGE:
            refuse(sock, "the server is at its connection limit; try again in a few seconds")
            return True
        self.nr_conns += 1
        self.per_client[conn.address] += 1
        conn.triage = self.nr_conns > self.worker_connections
        self.start_arriving(conn)
        return True

    def shed_one(self) -> bool:
        """At the cap, make room for a new client: close one connection that holds no request being
        answered - one still sending its request, or a kept-alive idle one - from the address that
        holds the most, its oldest first (a client's own upload in progress goes last: its address
        holds one connection). A flood spread over many addresses
        then sheds its own connections, and a new client is served (False: none could be shed)."""
        idle = [c for c in self.arriving if not c.triage] + list(self.keepalived_conns)
        if not idle:
            return False
        victim = max(idle, key=lambda c: (self.per_client[c.address], -getattr(c, "clock_start", 0.0)))
        if victim in self.arriving:
            self.drop_arriving(victim)
            refuse(victim.sock, "the server is busy and closed this connection, which had not sent a whole request")
        else:
            self.keepalived_conns.remove(victim)
            try:
                self.poller.unregister(victim.sock)
            except (OSError, KeyError, ValueError):
                pass  # already unregistered
            self.nr_conns -= 1
            victim.close()
        return True

    def closed(self, conn) -> None:
        left = self.per_client[conn.address] - 1
        if left > 0:
            self.per_client[conn.address] = left
        else:
            del self.per_client[conn.address]

    def finish_request(self, conn, fs):
        super().finish_request(conn, fs)
        self.set_accept_enabled(True)

    def start_request(self, conn) -> None:
        """Hand a request to the threads (main thread only, as every poller change)."""
        super().enqueue_req(conn)

    # ---- the event loop collects requests ----------------------------------------------------
    def on_client_socket_readable(self, conn, client):
        """A kept-alive connection's next request: collected like a new one."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self.start_arriving(conn)

    def start_arriving(self, conn) -> None:
        conn.clock_start, conn.arrived, conn.continued = time.monotonic(), bytearray(), False
        conn.sock.setblocking(False)
        self.arriving[conn] = conn.clock_start + (HEALTH_WAIT if conn.triage else self.read_seconds)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_arriving, conn))

    def on_arriving(self, conn, sock) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            conn.arrived += data
            if conn.triage and not self.triaged(conn):
                return
            if not request_arrived(conn.arrived):
                self.continue_if_expected(conn)
                return
            problem = framing_problem(conn.arrived)
            if problem is not None:
                self.drop_arriving(conn)
                answer_and_close(conn.sock, json_error(*problem))
                return
        self.poller.unregister(sock)
        del self.arriving[conn]
        if not data:  # the client left before sending a whole request
            self.nr_conns -= 1
            conn.close()
            return
        conn.data_ready = True
        self.start_request(conn)  # the clock keeps running from the request's first appearance

    def triaged(self, conn) -> bool:
        """A connection over the cap: a health check goes on as usual (False: its request line has
        not arrived yet); anything else is refused."""
        line_end = conn.arrived.find(b"\r\n")
        if line_end < 0 and len(conn.arrived) < 64:
            return False
        if HEALTH_CHECK.match(bytes(conn.arrived[: max(line_end, 0) + 2])):
            conn.triage = False
            self.arriving[conn] = conn.clock_start + self.read_seconds
            return True
        self.drop_arriving(conn)
        refuse(conn.sock, "the server is at its connection limit; try again in a few seconds")
        return False

    def drop_arriving(self, conn) -> None:
        """Forget a connection the event loop was reading (its socket is closed by the caller)."""
        self.poller.unregister(conn.sock)
        del self.arriving[conn]
        self.nr_conns -= 1
        conn.on_close(conn)
        conn.on_close = None

    @staticmethod
    def continue_if_expected(conn) -> None:
        """A client that sent `Expect: 100-continue` (curl, for uploads) waits for this before its
        body; the thread's parser may send it once more later, which HTTP allows (1xx can repeat)."""
        end = conn.arrived.find(b"\r\n\r\n")
        if end < 0 or getattr(conn, "continued", False):
            return
        conn.continued = True
        if EXPECT_CONTINUE.search(bytes(conn.arrived[: end + 2])):
            try:
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                pass

    def murder_pending(self):
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c, deadline in self.arriving.items() if deadline <= now]:
            if conn.triage:
                self.drop_arriving(conn)
                refuse(conn.sock, "the server is at its connection limit; try again in a few seconds")
                continue
            self.poller.unregister(conn.sock)
            del self.arriving[conn]
            self.nr_conns -= 1
            try:  # best effort, never blocking the event loop
                conn.sock.send(json_error(408, f"the request did not arrive within {self.read_seconds:g} s"))
            except OSError:
                pass
            conn.close()

    def enqueue_req(self, conn):
        # a request the thread reads itself (leftover pipelined bytes): its clock starts now
        conn.clock_start = time.monotonic()
        self.start_request(conn)

    def handle(self, conn):
        wait = getattr(conn, "wait_for_data", None)  # gunicorn >= 24 hands threads unread connections
        if wait is not None and not conn.initialized and not conn.data_ready:
            if not wait(FIRST_BYTES_WAIT):
                return gthread._DEFER  # back to the poller, no thread held
        # blocking, with a deadline on every write (and read): a client that pipelines requests and
        # never reads the answers fills its buffers, and sendall would otherwise hold the thread forever
        conn.sock.settimeout(self.read_seconds)
        conn.init()
        self.clock(conn)
        arrived = getattr(conn, "arrived", None)
        if arrived and hasattr(conn.parser, "unreader"):
            conn.parser.unreader.unread(bytes(arrived))  # what the event loop collected comes first
        conn.arrived = None
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
        try:
            client.settimeout(2)
            client.sendall(json_error(status, message))
        except OSError:
            pass
