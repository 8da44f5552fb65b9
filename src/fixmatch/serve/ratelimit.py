"""A per-client request limit that holds across every worker process of one server.

Fixed windows (e.g. 60 per minute: the count restarts at each whole minute), counted per client
address in a small table in shared memory. The table is made by the process that starts the
server, before the workers are forked, so all workers (and any a crash replaces) count together;
a kernel file lock, which dies with its holder, serialises updates between processes.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import re
import struct
import tempfile
import threading
import time

from fixmatch.errors import UserError

UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
SLOT = struct.Struct("<Qqq")  # client key (0 = empty), window number, count
SLOTS = 4096  # clients tracked per window; beyond that, clients share slots (stricter, never looser)
PROBES = 8


def parse_rate_limit(text: str | None) -> tuple[int, int] | None:
    """'off'/''/None -> None; '60/minute', '5 per second', '100/hour' -> (count, seconds)."""
    if not text or text.strip().lower() in ("off", "none", "0"):
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:/|per)\s*(second|minute|hour|day)s?\s*", text.lower())
    if not m or int(m.group(1)) < 1:
        raise UserError(f"bad --rate-limit {text!r}: use e.g. '60/minute', '5/second' or 'off'")
    return int(m.group(1)), UNITS[m.group(2)]


class SharedRateLimit:
    def __init__(self, count: int, seconds: int):
        self.count, self.seconds = count, seconds
        self.text = f"{count} per {seconds} s"
        self.salt = os.urandom(16)  # client keys cannot be chosen to collide
        self.file = tempfile.TemporaryFile()
        self.file.truncate(SLOT.size * SLOTS)
        self.table = mmap.mmap(self.file.fileno(), SLOT.size * SLOTS)  # MAP_SHARED: forks see one table
        self.threads = threading.Lock()  # POSIX record locks do not exclude threads of one process

    @classmethod
    def from_text(cls, text: str | None) -> SharedRateLimit | None:
        parsed = parse_rate_limit(text)
        return cls(*parsed) if parsed else None

    def key(self, client: str) -> int:
        digest = hashlib.blake2b(client.encode(), digest_size=8, key=self.salt).digest()
        return int.from_bytes(digest, "little") or 1

    def hit(self, client: str) -> tuple[bool, int, int]:
        """Count one request of `client` -> (allowed, requests left in this window, seconds to its end)."""
        now = time.time()
        window = int(now // self.seconds)
        key = self.key(client)
        with self.threads:
            fcntl.lockf(self.file.fileno(), fcntl.LOCK_EX)
            try:
                offset = self.find_slot(key, window)
                old_key, old_window, used = SLOT.unpack_from(self.table, offset)
                used = used + 1 if (old_key, old_window) == (key, window) else 1
                SLOT.pack_into(self.table, offset, key, window, used)
            finally:
                fcntl.lockf(self.file.fileno(), fcntl.LOCK_UN)
        retry = max(1, math.ceil((window + 1) * self.seconds - now))
        return used <= self.count, max(0, self.count - used), retry

    def find_slot(self, key: int, window: int) -> int:
        """This client's slot, else a free or expired one near it, else (table full) the first."""
        offsets = [SLOT.size * ((key + i) % SLOTS) for i in range(PROBES)]
        slots = [SLOT.unpack_from(self.table, o) for o in offsets]
        for wanted in (lambda k, w: k == key, lambda k, w: k == 0 or w != window):
            for offset, (k, w, _) in zip(offsets, slots):
                if wanted(k, w):
                    return offset
        return offsets[0]
