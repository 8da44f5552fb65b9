"""`fixmatch serve`: the demo page and JSON API (Flask app, served by gunicorn's threaded workers).

One server model for one worker or many: gunicorn, N processes (each loads the model once, no
preload, so no onnxruntime session is ever shared across a fork), each with a few threads, a
read clock on every request (worker.py) and a rate limit shared by all processes (ratelimit.py).
"""

from __future__ import annotations

import dataclasses
import errno
import socket
from dataclasses import dataclass

from fixmatch.errors import UserError
from fixmatch.inference.predictor import check_model
from fixmatch.inference.preprocess import framing
from fixmatch.serve.limits import CLIENT_CONNECTIONS, CONNECTIONS, KEEPALIVE, THREADS  # noqa: F401 (re-exported)
from fixmatch.serve.ratelimit import SharedRateLimit

__all__ = ["ServeOptions", "create_app", "run_server"]


def __getattr__(name):  # `from fixmatch.serve import create_app`
    if name == "create_app":
        from fixmatch.serve.app import create_app  # deferred: Flask; the CLI imports this package

        return create_app
    raise AttributeError(name)


@dataclass
class ServeOptions:
    """What `fixmatch serve` takes (its flags' defaults; the CLI fills them from its arguments)."""

    model: str = "fer2013"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    rate_limit: str = "60/minute"
    read_timeout: float = 10.0
    client_connections: int = CLIENT_CONNECTIONS
    precision: str = "int8"
    face_detector: str = "auto"


def gunicorn_settings(args: ServeOptions) -> dict:
    return {
        "bind": f"{format_host(args.host)}:{args.port}",
        "workers": args.workers,
        "worker_class": "fixmatch.serve.worker.ClockedThreadWorker",
        "threads": THREADS,
        "worker_connections": CONNECTIONS,
        "keepalive": KEEPALIVE,
        "timeout": 30,
        "graceful_timeout": 10,
        "limit_request_line": 4094,
        "limit_request_fields": 50,
        "limit_request_field_size": 8190,
        "accesslog": "-",
        "control_socket_disable": True,
    }


def format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def run_gunicorn(args: ServeOptions, rate_limit) -> None:
    from gunicorn.app.base import BaseApplication

    from fixmatch.serve.worker import ClockedThreadWorker  # deferred: gunicorn, only when serving

    ClockedThreadWorker.read_seconds = args.read_timeout  # inherited by the forked workers
    ClockedThreadWorker.client_connections = args.client_connections

    class Server(BaseApplication):
        def load_config(self):
            for key, value in gunicorn_settings(args).items():
                if key in self.cfg.settings:  # control_socket_disable is new in gunicorn 25.1
                    self.cfg.set(key, value)

        def load(self):
            import os

            import cv2

            from fixmatch.serve.app import create_app  # deferred: Flask, in the worker

            # the cores shared out between the workers: with one worker per core OpenCV's own pool
            # would only oversubscribe; with fewer workers, face detection may use the spare cores
            cv2.setNumThreads(max(1, (os.cpu_count() or 1) // args.workers))
            return create_app(args.model, rate_limit, precision=args.precision, face_detector=args.face_detector)

    Server().run()


def check_address(host: str, port: int) -> None:
    """The port is free and the host is an address of this machine: one clear error now, not
    gunicorn's retries for 9 s and exit 1 (the socket is closed again at once; gunicorn binds it)."""
    if not 1 <= port <= 65535:
        raise UserError(f"--port must be 1..65535 (got {port})")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"--host {host!r} is not an address or a known name ({e.strerror})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UserError(
                    f"port {port} on {host} is already in use: stop the other server or pick another --port"
                ) from None
            if e.errno == errno.EACCES:
                raise UserError(
                    f"no permission to listen on port {port} (ports below 1024 need root): pick another --port"
                ) from None
            raise UserError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def run_server(args: ServeOptions) -> int:
    """`fixmatch serve`: check everything a worker would fail on, once, then start the workers."""
    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    if not args.read_timeout > 0:
        raise UserError("--read-timeout must be a positive number of seconds")
    if args.client_connections < 0:
        raise UserError("--client-connections must be 0 (no cap) or more")
    rate_limit = SharedRateLimit.from_text(args.rate_limit)  # made before the fork: shared by all workers
    check_address(args.host, args.port)
    # every worker would fail the same way: say it once, here (the workers load the model themselves)
    meta = check_model(args.model, args.precision)
    if framing(meta) == "face":  # chosen once, here: auto says when it falls back to Haar
        from fixmatch.inference.face import resolve_detector  # deferred: OpenCV

        args = dataclasses.replace(args, face_detector=resolve_detector(args.face_detector))
    print(
        f"fixmatch serve: http://{format_host(args.host)}:{args.port}/ model {args.model} "
        f"({len(meta['class_names'])} classes, {meta.get('precision', 'fp32')}"
        + (f", face detector {args.face_detector}" if framing(meta) == "face" else "")
        + "), "
        f"{args.workers} worker(s) x {THREADS} threads",
        flush=True,
    )
    run_gunicorn(args, rate_limit)
    return 0
