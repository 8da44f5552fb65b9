"""Load test for `fixmatch serve`: N predictions at concurrency C against a server on this machine.

Prints p50/p95/p99 latency, requests per second and the error count (JSON on the last line).
Bounded: at most 20,000 requests, 64 concurrent, 64 stalled connections, and --max-seconds of wall
time; loopback only. --stalled N keeps N slowloris-style connections open meanwhile (each sends half
its headers and waits; one the server closes is opened again), to measure serving under them.

    # against a running server (start it with --rate-limit off, or the limiter answers 429s)
    python benchmarks/load_test.py --url http://127.0.0.1:8000 --image face.jpg -n 2000 -c 1
    # or let the script start and stop the server itself
    python benchmarks/load_test.py --serve model.onnx --workers 2 --image face.jpg -n 2000 -c 4
    python benchmarks/load_test.py --serve fer2013 --workers 2 --image face.jpg -n 500 -c 4 --stalled 16
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

MAX_REQUESTS, MAX_CONCURRENCY, MAX_STALLED = 20_000, 64, 64
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
BOUNDARY = "fixmatchloadtest0123456789"


def multipart(data: bytes, name: str = "face.jpg") -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def one_request(url: str, body: bytes) -> tuple[float, str | None]:
    """(seconds, None) on a 200 with a label, else (seconds, what went wrong)."""
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            ok = "label" in json.loads(r.read())
        return time.perf_counter() - t0, None if ok else "no label in the answer"
    except urllib.error.HTTPError as e:
        return time.perf_counter() - t0, f"HTTP {e.code}"
    except (OSError, ValueError) as e:
        return time.perf_counter() - t0, type(e).__name__


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


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None  # nothing was answered
    return round(sorted_values[min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1)))], 1)


def run(url: str, body: bytes, n: int, concurrency: int, max_seconds: float) -> dict:
    latencies, errors, lock = [], {}, threading.Lock()
    deadline = time.perf_counter() + max_seconds

    def worker(_):
        if time.perf_counter() > deadline:
            return
        seconds, err = one_request(url, body)
        with lock:
            latencies.append(seconds)
            if err:
                errors[err] = errors.get(err, 0) + 1

    for _ in range(2 * concurrency):  # warm-up, not counted: first requests load lazy state
        if time.perf_counter() > deadline:
            break
        one_request(url, body)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(n)))
    wall = time.perf_counter() - t0
    ms = sorted(1000 * s for s in latencies)
    return {
        "requests": len(ms),
        "concurrency": concurrency,
        "seconds": round(wall, 2),
        "req_per_s": round(len(ms) / wall, 1),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "stopped_early": len(ms) < n,
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
    p.add_argument("--stalled", type=int, default=0, help="half-sent connections kept open meanwhile")
    args = p.parse_args()
    if not (
        1 <= args.requests <= MAX_REQUESTS
        and 1 <= args.concurrency <= MAX_CONCURRENCY
        and 0 <= args.stalled <= MAX_STALLED
    ):
        sys.exit(
            f"--requests must be 1..{MAX_REQUESTS}, --concurrency 1..{MAX_CONCURRENCY}, --stalled 0..{MAX_STALLED}"
        )
    try:
        proc, base = (
            start_server(args.serve, "--rate-limit", "off", workers=args.workers)
            if args.serve
            else (None, args.url.rstrip("/"))
        )
    except RuntimeError as e:
        sys.exit(str(e))
    if urlparse(base).hostname not in LOOPBACK:
        sys.exit("refusing to load-test a server that is not on this machine (127.0.0.1 / localhost)")
    body = multipart(open(args.image, "rb").read())
    try:
        with Stallers(base, args.stalled) as stallers:
            result = run(base + "/api/predict", body, args.requests, args.concurrency, args.max_seconds)
        result.update(stalled=args.stalled, stalled_connections_opened=stallers.opened)
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=30)
    print(
        f"{result['requests']} requests, concurrency {result['concurrency']}: p50 {result['p50_ms']} ms, "
        f"p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms, {result['req_per_s']} req/s, "
        f"{result['errors']} errors" + (f", {args.stalled} stalled connections open" if args.stalled else "")
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
