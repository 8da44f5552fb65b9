"""Load test for `fixmatch serve`: N predictions at concurrency C against a server on this machine.

Prints p50/p95/p99 latency, requests per second and the error count (JSON on the last line).
Bounded: at most 20,000 requests, 64 concurrent, 64 stalled and 2,000 half-open connections, and
--max-seconds of wall time; loopback only. Each of the C clients sends from its own loopback
address (127.0.1.x), as C different clients would. --keep-alive: each client keeps one connection
(else a new one per request). --stalled N keeps N slowloris-style connections open meanwhile (each
sends half its headers and waits; one the server closes is opened again); --half-open N opens N
such connections once, all from one address (127.0.0.2), before the run. --posters P --newcomers K
measures instead how long a new client waits while P clients post without pause on kept-alive
connections: K single requests on new connections, one after another.

    # against a running server (start it with --rate-limit off, or the limiter answers 429s)
    python benchmarks/load_test.py --url http://127.0.0.1:8000 --image face.jpg -n 2000 -c 1
    # or let the script start and stop the server itself
    python benchmarks/load_test.py --serve model.onnx --workers 2 --image face.jpg -n 2000 -c 4
    python benchmarks/load_test.py --serve fer2013 --workers 2 --image face.jpg -n 500 -c 4 --stalled 16
    python benchmarks/load_test.py --serve fer2013 --workers 2 --image face.jpg -n 500 -c 4 --half-open 1000 \
        --serve-arg=--read-timeout=300   # the server holds its share of them for the whole run
    python benchmarks/load_test.py --serve fer2013 --workers 2 --image face.jpg --posters 4 --newcomers 20
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

MAX_REQUESTS, MAX_CONCURRENCY, MAX_STALLED, MAX_HALF_OPEN, MAX_POSTERS, MAX_NEWCOMERS = 20_000, 64, 64, 2000, 16, 200
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
BOUNDARY = "fixmatchloadtest0123456789"


def multipart(data: bytes, name: str = "face.jpg") -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


class Client:
    """One client: its own source address, a new connection per request or one kept alive."""

    def __init__(self, base: str, body: bytes, source: str, keep_alive: bool):
        url = urlparse(base)
        self.address, self.body, self.source, self.keep_alive = (url.hostname, url.port), body, source, keep_alive
        self.conn: http.client.HTTPConnection | None = None

    def connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(*self.address, timeout=30, source_address=(self.source, 0))
        return self.conn

    def request(self) -> tuple[float, str | None]:
        """(seconds, None) on a 200 with a label, else (seconds, what went wrong)."""
        t0 = time.perf_counter()
        try:
            conn = self.connection()
            conn.request(
                "POST", "/api/predict", self.body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
            )
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                err = f"HTTP {r.status}"
            else:
                err = None if "label" in json.loads(data) else "no label in the answer"
            if not self.keep_alive or r.will_close:
                self.close()
            return time.perf_counter() - t0, err
        except (OSError, ValueError, http.client.HTTPException) as e:
            self.close()
            return time.perf_counter() - t0, type(e).__name__

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def source_address(i: int) -> str:
    """The i-th client's loopback address: 127.0.1.1, 127.0.1.2, ... (Linux answers all of 127/8)."""
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


class Stallers:
    """N connections that each send half a request and never finish it, reopened when closed."""

    def __init__(self, base: str, n: int):
        url = urlparse(base)
        self.address, self.n = (url.hostname, url.port), n
        self.stop, self.opened = threading.Event(), 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def open_one(self) -> socket.socket:
        s = socket.create_connection(self.address, timeout=5)
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Stalled: ")
        s.setblocking(False)
        self.opened += 1
        return s

    def run(self) -> None:
        import selectors

        sel = selectors.DefaultSelector()
        for _ in range(self.n):
            sel.register(self.open_one(), selectors.EVENT_READ)
        while not self.stop.is_set():
            for key, _ in sel.select(timeout=0.2):  # readable: the server answered (408) or closed
                sel.unregister(key.fileobj)
                key.fileobj.close()
                if not self.stop.is_set():
                    sel.register(self.open_one(), selectors.EVENT_READ)
        for key in list(sel.get_map().values()):
            key.fileobj.close()

    def __enter__(self):
        if self.n:
            self.thread.start()
            time.sleep(1.0)  # all of them connected and sent their half request
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.n:
            self.thread.join(timeout=5)


class Attack:
    """N attacking connections kept open in a thread, each opened by `opener`, reopened when the
    server answers or closes it (a bounded loop: at most MAX_REOPENS opens in all)."""

    MAX_REOPENS = 20_000

    def __init__(self, base: str, n: int, opener):
        url = urlparse(base)
        self.address, self.n, self.opener = (url.hostname, url.port), n, opener
        self.stop, self.opened = threading.Event(), 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def open_one(self, i: int):
        self.opened += 1
        try:
            s = self.opener(self.address, i)
        except OSError:
            return None
        s.setblocking(False)
        return s

    def run(self) -> None:
        """Reopen each connection the server closed: one it answered (readable), or - for clients
        that never read (the pipeliners) - one in CLOSE_WAIT, seen without reading."""
        conns = {i: self.open_one(i) for i in range(self.n)}
        while not self.stop.wait(0.2) and self.opened < self.MAX_REOPENS:
            for i, s in conns.items():
                if s is None or server_closed(s, self.opener is pipeliner):
                    if s is not None:
                        s.close()
                    conns[i] = self.open_one(i)
        for s in conns.values():
            if s is not None:
                s.close()

    def __enter__(self):
        if self.n:
            self.thread.start()
            time.sleep(1.0)  # all of them connected and sent what they send
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.n:
            self.thread.join(timeout=10)


CLOSE_WAIT = 8  # Linux's tcpi_state: the server closed its side


def server_closed(s: socket.socket, never_reads: bool) -> bool:
    if never_reads:
        return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == CLOSE_WAIT
    try:
        s.recv(65536)  # an answer (408, 503) or the end: either way the server let go of it
        return True
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def stalled_chunked(address, i: int) -> socket.socket:
    """Headers of a chunked upload and a first chunk, then nothing (two addresses: inside their caps)."""
    s = socket.create_connection(address, timeout=5, source_address=(f"127.0.0.{5 + i % 2}", 0))
    s.sendall(
        b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\n\r\n5\r\n--x\r\n\r\n"
    )
    return s


def pipeliner(address, i: int) -> socket.socket:
    """3,000 page requests at once, answers never read (a 4 KB receive buffer fills at once)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(5)
    s.bind((f"127.0.0.{7 + i % 2}", 0))
    s.connect(address)
    try:  # the server stops reading once its answers back up: what fits is sent, the rest given up
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 3000)
    except TimeoutError:
        pass
    return s


def spread_half_open(address, i: int) -> socket.socket:
    """Half a request from one of 100 addresses (127.0.2.1-100), 10 connections each for i < 1000."""
    s = socket.create_connection(address, timeout=5, source_address=(f"127.0.2.{1 + i % 100}", 0))
    s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half-Open: ")
    return s


ATTACKS = {  # name -> (connections, opener): the stalls of docs/serving.md, each against the same server
    "none": (0, None),
    "32 stalled chunked uploads": (32, stalled_chunked),
    "32 pipelining clients that never read": (32, pipeliner),
    "1,000 half-open over 100 addresses": (1000, spread_half_open),
}


def attacks_table(base: str, body: bytes, n: int, concurrency: int, max_seconds: float) -> list[dict]:
    """The real clients' latency under each attack in turn, on one server, in one run."""
    rows = []
    for name, (count, opener) in ATTACKS.items():
        with Attack(base, count, opener) as attack:
            result = run(base, body, n, concurrency, max_seconds, keep_alive=False)
        rows.append({"attack": name, **result, "attack_connections_opened": attack.opened})
        print(
            f"| {name} | {result['requests']} | {result['p50_ms']} | {result['p95_ms']} | {result['errors']} |",
            flush=True,
        )
    return rows


class HalfOpen:
    """N connections from one address (127.0.0.2), each sending half a request once, then waiting.
    held(): how many the server has neither answered nor closed."""

    def __init__(self, base: str, n: int):
        url = urlparse(base)
        self.address, self.n, self.conns = (url.hostname, url.port), n, []

    def __enter__(self):
        for _ in range(self.n):
            s = socket.create_connection(self.address, timeout=5, source_address=("127.0.0.2", 0))
            try:
                s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half-Open: ")
            except OSError:
                pass  # refused while sending: counted as not held
            self.conns.append(s)
        time.sleep(1.0)  # the server has seen every one
        return self

    def held(self) -> int:
        import selectors

        sel = selectors.DefaultSelector()
        for s in self.conns:
            sel.register(s, selectors.EVENT_READ)
        answered = len(sel.select(timeout=0))
        sel.close()
        return self.n - answered

    def __exit__(self, *exc):
        for s in self.conns:
            s.close()


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None  # nothing was answered
    return round(sorted_values[min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1)))], 1)


def summary(latencies: list[float]) -> dict:
    ms = sorted(1000 * s for s in latencies)
    return {f"p{q}_ms": percentile(ms, q) for q in (50, 95, 99)} | {"max_ms": round(ms[-1], 1) if ms else None}


def run(base: str, body: bytes, n: int, concurrency: int, max_seconds: float, keep_alive: bool) -> dict:
    latencies, errors, lock = [], {}, threading.Lock()
    deadline = time.perf_counter() + max_seconds
    clients = [Client(base, body, source_address(i), keep_alive) for i in range(concurrency)]
    queue = iter(range(n))

    def client_loop(client: Client) -> None:
        while time.perf_counter() < deadline:
            with lock:
                if next(queue, None) is None:
                    break
            seconds, err = client.request()
            with lock:
                latencies.append(seconds)
                if err:
                    errors[err] = errors.get(err, 0) + 1
        client.close()

    def warm_up(client: Client) -> None:  # not counted: first requests load lazy state
        for _ in range(2):
            if client.request()[1] is not None:
                break  # an error (a timeout?): no use trying again before the run

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(warm_up, clients))
        t0 = time.perf_counter()
        list(pool.map(client_loop, clients))
    wall = time.perf_counter() - t0
    return {
        "requests": len(latencies),
        "concurrency": concurrency,
        "keep_alive": keep_alive,
        "seconds": round(wall, 2),
        "req_per_s": round(len(latencies) / wall, 1),
        **summary(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "stopped_early": len(latencies) < n,
    }


def newcomers(base: str, body: bytes, posters: int, k: int, max_seconds: float) -> dict:
    """K requests, each from a new client on a new connection, one after another, while `posters`
    clients post without pause on kept-alive connections -> the newcomers' latencies."""
    stop, lock, answered = threading.Event(), threading.Lock(), [0]
    deadline = time.perf_counter() + max_seconds

    def post(i: int) -> None:
        client = Client(base, body, source_address(i), keep_alive=True)
        while not stop.is_set() and time.perf_counter() < deadline:
            client.request()
            with lock:
                answered[0] += 1
        client.close()

    threads = [threading.Thread(target=post, args=(i,), daemon=True) for i in range(posters)]
    for t in threads:
        t.start()
    time.sleep(2.0)  # the posters are under way
    waits, errors = [], 0
    try:
        for j in range(k):
            if time.perf_counter() > deadline:
                break
            seconds, err = Client(base, body, source_address(posters + j), keep_alive=False).request()
            waits.append(seconds)
            errors += err is not None
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=35)
    return {
        "posters": posters,
        "newcomers": len(waits),
        "errors": errors,
        "poster_answers": answered[0],
        **summary(waits),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model, *extra: str, workers: int = 2) -> tuple[subprocess.Popen, str]:
    """`fixmatch serve` on a free local port, once it answers /healthz -> (process, base URL). (The
    serving tests start theirs with it too.) Its output goes to a temporary file, not a pipe nobody
    reads; a server that exits, or does not answer within 180 s (a hang guard, generous for a loaded
    machine), raises RuntimeError with its output."""
    port = free_port()
    cmd = [sys.executable, "-m", "fixmatch", "serve", "--model", str(model), "--port", str(port)]
    cmd += ["--workers", str(workers), *extra]
    with tempfile.TemporaryFile() as log:  # the server keeps its own handle open
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2)
                return proc, base
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    proc.kill()
                    proc.wait()
                    log.seek(0)
                    output = log.read().decode(errors="replace")[-3000:]
                    raise RuntimeError(f"`fixmatch {' '.join(cmd[3:])}` did not come up:\n{output}") from None
                time.sleep(0.3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of a running server (loopback only)")
    p.add_argument("--serve", metavar="MODEL", help="start `fixmatch serve --model MODEL` for the test instead")
    p.add_argument("--workers", type=int, default=1, help="with --serve: server worker processes")
    p.add_argument("--image", required=True, help="the JPEG/PNG every request sends")
    p.add_argument("-n", "--requests", type=int, default=2000)
    p.add_argument("-c", "--concurrency", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=300, help="stop sending after this long")
    p.add_argument("--keep-alive", action="store_true", help="each client keeps one connection")
    p.add_argument("--stalled", type=int, default=0, help="half-sent connections kept open meanwhile")
    p.add_argument("--half-open", type=int, default=0, help="half-sent connections opened once, from one address")
    p.add_argument("--posters", type=int, default=0, help="measure newcomers while this many clients post")
    p.add_argument("--newcomers", type=int, default=20, help="with --posters: new clients measured")
    p.add_argument("--serve-arg", action="append", default=[], help="with --serve: one more server argument")
    p.add_argument(
        "--attacks", action="store_true", help="the real clients' latency with no attack, then under each stall"
    )
    args = p.parse_args()
    if not (
        1 <= args.requests <= MAX_REQUESTS
        and 1 <= args.concurrency <= MAX_CONCURRENCY
        and 0 <= args.stalled <= MAX_STALLED
        and 0 <= args.half_open <= MAX_HALF_OPEN
        and 0 <= args.posters <= MAX_POSTERS
        and 1 <= args.newcomers <= MAX_NEWCOMERS
    ):
        sys.exit(
            f"--requests must be 1..{MAX_REQUESTS}, --concurrency 1..{MAX_CONCURRENCY}, --stalled 0..{MAX_STALLED}, "
            f"--half-open 0..{MAX_HALF_OPEN}, --posters 0..{MAX_POSTERS}, --newcomers 1..{MAX_NEWCOMERS}"
        )
    try:
        proc, base = (
            start_server(args.serve, "--rate-limit", "off", *args.serve_arg, workers=args.workers)
            if args.serve
            else (None, args.url.rstrip("/"))
        )
    except RuntimeError as e:
        sys.exit(str(e))
    if urlparse(base).hostname not in LOOPBACK:
        sys.exit("refusing to load-test a server that is not on this machine (127.0.0.1 / localhost)")
    body = multipart(open(args.image, "rb").read())
    try:
        if args.attacks:
            print("| attack | requests | p50 ms | p95 ms | errors |\n|---|---|---|---|---|", flush=True)
            result = {"attacks": attacks_table(base, body, args.requests, args.concurrency, args.max_seconds)}
        elif args.posters:
            result = newcomers(base, body, args.posters, args.newcomers, args.max_seconds)
            print(
                f"{result['newcomers']} new clients while {args.posters} post on kept-alive connections: "
                f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, max {result['max_ms']} ms, "
                f"{result['errors']} errors"
            )
        else:
            with Stallers(base, args.stalled) as stallers, HalfOpen(base, args.half_open) as half_open:
                result = run(base, body, args.requests, args.concurrency, args.max_seconds, args.keep_alive)
                result.update(half_open=args.half_open, half_open_held_at_end=half_open.held())
            result.update(stalled=args.stalled, stalled_connections_opened=stallers.opened)
            print(
                f"{result['requests']} requests, concurrency {result['concurrency']}"
                f"{' keep-alive' if args.keep_alive else ''}: p50 {result['p50_ms']} ms, "
                f"p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms, {result['req_per_s']} req/s, "
                f"{result['errors']} errors"
                + (f", {args.stalled} stalled connections open" if args.stalled else "")
                + (
                    f", {args.half_open} half-open ({result['half_open_held_at_end']} held at the end)"
                    if args.half_open
                    else ""
                )
            )
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=30)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
