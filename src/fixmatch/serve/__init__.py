"""`fixmatch serve`: the facial-expression demo page and JSON API (Flask; gunicorn for --workers > 1)."""

from __future__ import annotations

from fixmatch.serve.app import create_app, parse_rate_limit

__all__ = ["create_app", "run_server"]


def run_gunicorn(args, rate_limit: str | None) -> None:
    """N worker processes, each importing the app and loading the model once (no preload, so no
    onnxruntime session is ever shared across a fork)."""
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self):
            for key, value in {"bind": f"{args.host}:{args.port}", "workers": args.workers,
                               "worker_class": "sync", "timeout": 30, "accesslog": "-",
                               "control_socket_disable": True}.items():
                if key in self.cfg.settings:  # control_socket_disable is new in gunicorn 25.1
                    self.cfg.set(key, value)

        def load(self):
            import cv2

            cv2.setNumThreads(1)  # one process per core already; OpenCV's own pool would oversubscribe
            return create_app(args.model, rate_limit)

    Server().run()


def run_server(args) -> int:
    from fixmatch.errors import UserError
    from fixmatch.serve.model import resolve_model

    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    rate_limit = parse_rate_limit(args.rate_limit)
    if args.workers > 1:
        # fail here with the clear message, not in every worker; loading the model stays in the
        # workers, since a session created before the fork leaves its thread pools' locks behind
        resolve_model(args.model)
        run_gunicorn(args, rate_limit)
    else:
        app = create_app(args.model, rate_limit)
        print(f"fixmatch demo on http://{args.host}:{args.port}/ (model {args.model})")
        app.run(host=args.host, port=args.port, threaded=True)
    return 0
