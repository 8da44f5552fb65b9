"""What one worker process holds at most (gunicorn's settings and the worker's caps), in one place:
the server's start-up (serve/__init__.py) and the worker (worker.py) both read them."""

THREADS = 4  # per worker: requests being read or answered at once (2 of them decode, see app.py)
CONNECTIONS = 64  # per worker: open connections (each buffers up to ~1.1 MB of request); more: 503 (worker.py)
CLIENT_CONNECTIONS = 16  # per worker: connections one client address may hold (a browser opens up to 6); more: 503
KEEPALIVE = 5  # seconds an idle connection is kept (in the poller, no thread)
