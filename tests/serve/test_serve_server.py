"""`fixmatch serve` as a real server (gunicorn, 2 workers, 127.0.0.1): stalled clients, the server's
own errors in JSON, a rate limit over all workers, and start-up mistakes as one clear error."""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import select
import selectors
import signal
import socket
import struct
import termios
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from serve_fixtures import face_jpeg, free_port, multipart, pipeliner, start_server, stop_server

pytest.importorskip("gunicorn", reason="gunicorn is in the serve extra")
from fixmatch.cli import main  # noqa: E402
from fixmatch.serve import CLIENT_CONNECTIONS, CONNECTIONS  # noqa: E402

READ_TIMEOUT = 4.0  # long beside a prediction even on a loaded machine: the tests tell them apart
STALLED = 16  # twice the threads of 2 workers x 4


@pytest.fixture(scope="module")
def served(fer_model):
    """One 2-worker server for the module. Its rate limit (10 a day per client) is tested from
    127.0.0.2 (any 127.x address reaches a server on 127.0.0.1); the other tests, from 127.0.0.1,
    send fewer than 10 API requests in all."""
    proc, base = start_server(fer_model["onnx"], "--rate-limit", "10/day", "--read-timeout", str(READ_TIMEOUT))
    yield proc, base
    stop_server(proc)


@pytest.fixture
def server(served):
    return served[1]


@pytest.fixture(scope="module")
def open_server(fer_model):
    """A 2-worker server without a rate limit (for clients that post continuously) whose read clock
    (60 s) outlasts every wait in the tests that use it: a half-sent request it holds is still
    unanswered when they check."""
    proc, base = start_server(fer_model["onnx"], "--rate-limit", "off", "--read-timeout", "60")
    yield base
    stop_server(proc)


def predict(base: str, data: bytes, timeout: float = 15) -> dict:
    body, boundary = multipart(data)
    req = urllib.request.Request(
        base + "/api/predict",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def raw(base: str, request: bytes, timeout: float = 10) -> tuple[int, dict, bytes]:
    """Send bytes as they are; -> (status, headers, body) of the answer."""
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        return read_response(s)


def read_response(s: socket.socket) -> tuple[int, dict, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed without an answer: {data[:200]!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def readable(sock: socket.socket) -> bool:
    """Whether the server has answered or closed this connection (data or EOF waiting), without blocking."""
    return bool(select.select([sock], [], [], 0)[0])


def test_stalled_clients_do_not_stop_the_server(server, fer_slice):
    """STALLED connections each send half a request and wait (half the headers, or the headers and
    part of the upload): a normal prediction is still answered, every stalled client gets a JSON
    408 when its time is up, and the server is fine afterwards."""
    port = int(server.rsplit(":", 1)[1])
    body_head, boundary = multipart(b"\xff\xd8\xff" + bytes(50_000))
    half_headers = b"GET /api/model HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    half_body = (
        f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
        f"boundary={boundary}\r\nContent-Length: {len(body_head)}\r\n\r\n"
    ).encode() + body_head[:3000]
    stalled = []
    try:
        for i in range(STALLED):
            # from their own address: the prediction below must not meet their per-address cap
            s = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT + 8, source_address=("127.0.0.4", 0))
            s.sendall(half_headers if i % 2 else half_body)
            stalled.append(s)
        # no wait needed: the listener hands out connections oldest first, so every stalled one is taken
        # (and, in a thread-per-connection server, would hold a thread) before the prediction below
        answer = predict(server, face_jpeg(fer_slice["x_test"][2]))
        assert "label" in answer
        # answered while every stalled client still waits for its 408: it did not queue behind them
        assert not any(readable(s) for s in stalled), "a normal request waited until the stalled clients timed out"
        for s in stalled:
            status, headers, body = read_response(s)
            assert status == 408 and headers["content-type"] == "application/json", (status, body[:200])
            assert "did not arrive" in json.loads(body)["error"]
    finally:
        for s in stalled:
            s.close()
    assert "label" in predict(server, face_jpeg(fer_slice["x_test"][3]), timeout=5)


def test_idle_connections_hold_no_thread(server, fer_slice):
    """Connections that send nothing wait without a thread: a prediction is answered at once."""
    port = int(server.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.4", 0)) for _ in range(STALLED)]
    try:
        # taken before the prediction (oldest first): a server whose threads kept them would answer it
        # only once they timed out, and they would then be readable (the assertion below)
        assert "label" in predict(server, face_jpeg(fer_slice["x_test"][4]))
        # answered while the idle connections are all still open (sync workers: only once they time out)
        assert not any(readable(s) for s in idle), "the prediction waited until idle connections were dropped"
    finally:
        for s in idle:
            s.close()


def test_server_errors_are_json(server):
    for request, status, words in [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "too long"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(60)) + b"\r\n", 431, "headers"),
        (b"NOT-HTTP at all\r\n\r\n", 400, "malformed"),
        (
            b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 5000000\r\n\r\n",
            413,
            "limit is 1 MB",
        ),  # refused from the header, unread
    ]:
        got, headers, body = raw(server, request)
        assert got == status and headers["content-type"] == "application/json", (got, body[:200])
        assert words in json.loads(body)["error"]


def test_response_headers(server):
    status, headers, _ = raw(server, b"GET //evil.example/x HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    assert status == 404 and "location" not in headers  # no redirect built from the Host header
    status, headers, _ = raw(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    server_header = headers.get("server", "")
    assert "werkzeug" not in server_header.lower() and "python" not in server_header.lower()


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    if children.exists():
        return [int(p) for p in children.read_text().split()]
    return [
        int(p.parent.name)
        for p in Path("/proc").glob("[0-9]*/stat")
        if p.read_text().rsplit(")", 1)[1].split()[1] == str(master)
    ]


def test_rate_limit_holds_across_workers_and_restarts(served):
    """10 per day for one client: 10 answers over 2 workers in all, even after every worker is
    killed and replaced (the count lives in the server, not in a worker)."""
    proc, base = served
    port = int(base.rsplit(":", 1)[1])

    def statuses(n):
        out = []
        for _ in range(n):  # a new connection each time: the kernel spreads them over the workers
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=("127.0.0.2", 0))
            try:
                conn.request("GET", "/api/model")
                r = conn.getresponse()
                body = r.read()
                out.append(r.status)
                if r.status == 429:
                    assert int(r.headers["Retry-After"]) > 0 and "too many" in json.loads(body)["error"]
            finally:
                conn.close()
        return out

    first = statuses(6)
    old = worker_pids(proc.pid)
    assert len(old) == 2
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 120  # a hang guard, generous for a loaded machine
    while not (len(new := worker_pids(proc.pid)) == 2 and not set(new) & set(old)):
        assert time.time() < deadline, "the workers were not replaced"
        time.sleep(0.2)
    urllib.request.urlopen(base + "/healthz", timeout=20)  # replaced workers are up (never limited)
    # a worker accepts only once its model is loaded: a request meets a ready worker, never a loading one
    rest = statuses(14)
    assert first == [200] * 6 and rest.count(200) == 4 and rest.count(429) == 10, (first, rest)


def test_start_up_mistakes_exit_2_at_once(fer_model, tmp_path, capsys):
    port = free_port()
    assert main(["serve", "--port", "70000"]) == 2
    assert "--port must be 1..65535" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        assert main(["serve", "--model", str(fer_model["onnx"]), "--port", str(port)]) == 2
    assert "already in use" in capsys.readouterr().err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    assert main(["serve", "--workers", "2", "--model", str(junk), "--port", str(port)]) == 2
    assert "not a readable ONNX file" in capsys.readouterr().err
    text = tmp_path / "model.safetensors"
    text.write_text("hello")
    assert main(["serve", "--workers", "2", "--model", str(text), "--port", str(port)]) == 2
    assert "not a fixmatch .safetensors export" in capsys.readouterr().err
    assert main(["serve", "--read-timeout", "0", "--port", str(port)]) == 2


def test_expect_100_continue_is_answered_before_the_body(server, fer_slice):
    """curl asks `Expect: 100-continue` before an upload: the event loop says continue at once
    (else curl waits a second before sending, for every upload)."""
    body, boundary = multipart(face_jpeg(fer_slice["x_test"][5]))
    head = (
        f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Type: "
        f"multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
        s.sendall(head)
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.settimeout(10)
        s.sendall(body)
        data = b""
        while not (data.endswith(b"}") or data.endswith(b"}\n")):
            chunk = s.recv(65536)
            assert chunk, data[:300]
            data += chunk
    continued = b"HTTP/1.1 100 Continue\r\n\r\n"
    while data.startswith(continued):  # the thread's parser may say continue once more
        data = data[len(continued) :]
    assert data.startswith(b"HTTP/1.1 200") and b'"label"' in data, data[:300]


def test_a_server_that_does_not_come_up_is_one_error_with_its_output(tmp_path):
    with pytest.raises(RuntimeError, match="did not come up:\n.*model not found"):
        start_server(tmp_path / "missing.onnx")


def test_a_chunked_upload_over_the_limit_is_too_large_not_too_many_parts(server):
    """A 3 MB upload sent chunked (no Content-Length to refuse it by): 413, the size named, never the
    form's part count (werkzeug says 413 for both)."""
    body, boundary = multipart(b"\xff\xd8\xff" + bytes(3 * 1024 * 1024))
    head = (
        f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
    ).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[i : i + 65536] for i in range(0, len(body), 65536)))
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:

        def send():
            try:
                s.sendall(head + chunks + b"0\r\n\r\n")
            except OSError:
                pass  # the server may stop reading once it has answered

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        status, headers, answer = read_response(s)
        sender.join(timeout=10)
    assert status == 413 and headers["content-type"] == "application/json", (status, answer[:200])
    assert "limit is 1 MB" in json.loads(answer)["error"]


def test_a_request_with_bare_lf_lines_is_refused_at_once(server):
    """Lines ended by LF alone (no CR): the parser's 400 now, not a 408 when the read clock runs out
    (the event loop used to wait for CRLF CRLF, which never comes)."""
    status, headers, body = raw(server, b"GET /healthz HTTP/1.1\nHost: 127.0.0.1\n\n")
    assert status == 400 and headers["content-type"] == "application/json", (status, body[:200])
    assert "malformed" in json.loads(body)["error"]


HALF_REQUEST = b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def half_sent(port: int, source: str) -> socket.socket | None:
    """A connection from `source` that sends half a request and waits (None: refused while sending)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    try:
        s.sendall(HALF_REQUEST)
    except OSError:
        s.close()
        return None
    return s


def sort_out(conns: list[socket.socket], held_at_most: int, seconds: float = 30) -> tuple[list, list]:
    """Wait (at most `seconds`, a bound on a hang) until no more than held_at_most of `conns` are
    unanswered -> (held: still waiting, answers: what each of the others got: bytes, b'' when closed)."""
    sel = selectors.DefaultSelector()
    for s in conns:
        sel.register(s, selectors.EVENT_READ)
    answers, deadline = [], time.monotonic() + seconds
    while len(sel.get_map()) > held_at_most and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            try:
                answers.append(key.fileobj.recv(4096))
            except OSError:
                answers.append(b"")  # reset
            sel.unregister(key.fileobj)
    held = [key.fileobj for key in sel.get_map().values()]
    sel.close()
    assert len(held) <= held_at_most, f"{len(held)} connections neither served nor refused after {seconds} s"
    return held, answers


def still_waiting(conns: list[socket.socket]) -> bool:
    sel = selectors.DefaultSelector()
    for s in conns:
        sel.register(s, selectors.EVENT_READ)
    try:
        return not sel.select(timeout=0)
    finally:
        sel.close()


def test_a_thousand_half_sent_requests_from_one_client_stop_nothing(open_server, fer_slice):
    """1,000 connections from one address each send half a request and wait: past its cap (per
    worker) each is refused at once (503 or closed), the ones held wait for their read clock, and
    other clients' predictions and health checks are answered meanwhile."""
    port = int(open_server.rsplit(":", 1)[1])
    flood = []
    try:
        for _ in range(1000):
            if (s := half_sent(port, "127.0.0.3")) is not None:
                flood.append(s)
        held, answers = sort_out(flood, held_at_most=2 * CLIENT_CONNECTIONS)
        assert all(a == b"" or a.startswith(b"HTTP/1.1 503") for a in answers), {a[:40] for a in answers}
        assert b"too many connections from your address" in b"".join(answers) or not any(answers)
        assert "label" in predict(open_server, face_jpeg(fer_slice["x_test"][6]), timeout=30)
        assert json.loads(urllib.request.urlopen(open_server + "/healthz", timeout=30).read())["status"] == "ok"
        assert still_waiting(held)  # served while the flood was held, not after its 408s
    finally:
        for s in flood:
            s.close()


def test_over_the_connection_limit_health_checks_are_still_answered(open_server):
    """Half-sent requests from 16 addresses, 12 each (under each one's cap): 192 connections, over
    the 2 x CONNECTIONS the workers serve. Each one over it sheds an older one at once (503), none is
    left in the kernel's backlog; a health check is answered all the same, at the cost of one."""
    port = int(open_server.rsplit(":", 1)[1])
    flood = []
    try:
        for i in range(16):
            for _ in range(12):
                if (s := half_sent(port, f"127.0.0.{10 + i}")) is not None:
                    flood.append(s)
        held, answers = sort_out(flood, held_at_most=2 * CONNECTIONS)
        assert all(a == b"" or a.startswith(b"HTTP/1.1 503") for a in answers), {a[:40] for a in answers}
        health = urllib.request.urlopen(open_server + "/healthz", timeout=30)
        assert health.status == 200 and json.loads(health.read())["status"] == "ok"
        assert answered_now(held) <= 1  # the health check's connection shed one held connection at most
    finally:
        for s in flood:
            s.close()


def answered_now(conns: list[socket.socket]) -> int:
    sel = selectors.DefaultSelector()
    for s in conns:
        sel.register(s, selectors.EVENT_READ)
    try:
        return len(sel.select(timeout=0))
    finally:
        sel.close()


def test_a_new_client_is_served_while_keep_alive_clients_post(open_server, fer_slice):
    """4 clients post one after another on kept-alive connections, so no worker is ever idle; a new
    client's prediction is answered while they still post (it used to wait until they stopped)."""
    port = int(open_server.rsplit(":", 1)[1])
    body, boundary = multipart(face_jpeg(fer_slice["x_test"][7]))
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    most, stop, lock = 300, threading.Event(), threading.Lock()
    answered = [0] * 4
    done_posting = [False] * 4

    def poster(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for _ in range(most):
                if stop.is_set():
                    return
                conn.request("POST", "/api/predict", body=body, headers=headers)
                r = conn.getresponse()
                assert r.status == 200 and r.getheader("Connection") != "close", r.read()[:200]
                r.read()
                with lock:
                    answered[i] += 1
            done_posting[i] = True
        finally:
            conn.close()

    threads = [threading.Thread(target=poster, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while min(answered) < 3:  # every poster is under way on its kept-alive connection
            assert time.monotonic() < deadline and all(t.is_alive() for t in threads), answered
            time.sleep(0.05)
        before = sum(answered)
        assert "label" in predict(open_server, face_jpeg(fer_slice["x_test"][8]), timeout=120)
        meanwhile = sum(answered) - before
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not any(done_posting), f"the new client was answered only after the posters stopped ({answered})"
    assert meanwhile < most, meanwhile


CHUNKED_HEAD = (
    b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: multipart/form-data; boundary=x\r\n\r\n"
)


def test_stalled_chunked_uploads_hold_no_thread(open_server):
    """32 chunked uploads from two addresses (inside the per-address cap) send their
    headers and a first chunk, then stall: the event loop keeps collecting them, so no thread waits
    on them and another client is answered while they are still held (they used to take every
    thread until the read clock ran out)."""
    port = int(open_server.rsplit(":", 1)[1])
    stalled = []
    try:
        for i in range(2 * CLIENT_CONNECTIONS):  # from two addresses: never over one's cap in one worker
            s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(f"127.0.0.{5 + i % 2}", 0))
            s.sendall(CHUNKED_HEAD + b"5\r\n--x\r\n\r\n")
            stalled.append(s)
        for _ in range(8):  # more requests than the 2 x 4 threads
            health = urllib.request.urlopen(open_server + "/healthz", timeout=30)
            assert health.status == 200
        assert still_waiting(stalled)  # answered while every stalled upload was still held
    finally:
        for s in stalled:
            s.close()


def unread_bytes(s: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def backed_up(conns: list[socket.socket], seconds: float = 60) -> None:
    """Wait until every client holds answers it has not read and none arrives for a second: the
    server's writes to them are blocked (hang guard: `seconds`)."""
    deadline, before = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        now = [unread_bytes(s) for s in conns]
        if all(now) and now == before:
            return
        before = now
        time.sleep(1)


def test_after_reading_a_request_the_answers_writes_keep_a_deadline():
    """The parser's reads set a timeout for the time left; after a read the socket goes back to the
    read clock, not to blocking for ever: the answer's sendall to a client that never reads gives up."""
    from fixmatch.serve.worker import ClockedSocket

    server_side, client = socket.socketpair()
    with server_side, client:
        clocked = ClockedSocket(server_side, 0.5)
        clocked.restart(time.monotonic())
        client.sendall(b"GET")
        assert clocked.recv(3) == b"GET"
        assert server_side.gettimeout() == 0.5
        with pytest.raises(TimeoutError):
            server_side.sendall(b"x" * 50_000_000)  # the client never reads


def test_clients_that_pipeline_and_never_read_stop_nothing(server):
    """STALLED clients pipeline page requests and never read the answers, until the server's writes
    to them back up: another client's page and health check are still answered (the event loop holds
    what they sent and the threads' writes have deadlines: see the test above)."""
    port = int(server.rsplit(":", 1)[1])
    stuck = [pipeliner(("127.0.0.1", port), i) for i in range(STALLED)]  # load_test's attack, from 2 addresses
    try:
        backed_up(stuck)
        page = urllib.request.urlopen(server + "/", timeout=60)  # a hang guard: it takes milliseconds
        assert page.status == 200 and b"<html" in page.read().lower()
        health = urllib.request.urlopen(server + "/healthz", timeout=60)
        assert health.status == 200 and json.loads(health.read())["status"] == "ok"
    finally:
        for s in stuck:
            s.close()


@pytest.mark.parametrize(
    "size_line, status",
    [(b"-5", 400), (b"5;" + b"e" * 100_000, 400), (b"%x" % 2**96, 400), (b"ffffff", 413)],
    ids=["negative", "long-extension", "2^96", "over-the-limit"],
)
def test_a_bad_chunk_size_is_refused_at_once(server, size_line, status):
    """A chunk size that is not a short hex number (-5, a 100 KB extension, 2^96) is a 400 from the
    event loop at once, not a 500 with a traceback nor a 408 when the clock runs out; a size past the
    upload limit is a 413 at once."""
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT / 2) as s:  # less than the clock
        s.sendall(CHUNKED_HEAD + size_line + b"\r\n")
        got, headers, body = read_response(s)
    assert got == status and headers["content-type"] == "application/json", (got, body[:200])
    assert ("malformed chunked body" if status == 400 else "limit is 1 MB") in json.loads(body)["error"]


def test_an_address_spread_flood_still_lets_a_new_client_in(open_server, fer_slice):
    """1,000 half-sent requests spread over 100 addresses, 10 each (under each one's cap): over the
    workers' connections, the oldest connections of the addresses holding the most are shed, so a
    new client's prediction and health check are answered (they were all 503 before)."""
    port = int(open_server.rsplit(":", 1)[1])
    flood = []
    try:
        for i in range(100):
            for _ in range(10):
                if (s := half_sent(port, f"127.0.1.{i + 1}")) is not None:
                    flood.append(s)
        assert "label" in predict(open_server, face_jpeg(fer_slice["x_test"][9]), timeout=60)
        health = urllib.request.urlopen(open_server + "/healthz", timeout=60)
        assert health.status == 200 and json.loads(health.read())["status"] == "ok"
        _, answers = sort_out(flood, held_at_most=2 * CONNECTIONS)
        assert all(a == b"" or a.startswith(b"HTTP/1.1 503") for a in answers), {a[:40] for a in answers}
    finally:
        for s in flood:
            s.close()
