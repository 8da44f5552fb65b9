"""A lock handed over in arrival order.

threading.Semaphore wakes a waiter on release, but a thread that arrives meanwhile may take the
lock first; with clients that post again the moment they are answered, a newcomer could wait
behind them again and again. Here each waiter gets a ticket and the holder passes the lock to the
oldest: a request waits for at most the ones that were queued before it.
"""

from __future__ import annotations

import threading
from collections import deque


class Turns:
    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.waiting: deque[threading.Event] = deque()
        self.held = False

    def acquire(self, timeout: float) -> bool:
        """Take the lock, waiting behind the earlier callers for at most `timeout` seconds."""
        with self.guard:
            if not self.held:
                self.held = True
                return True
            turn = threading.Event()
            self.waiting.append(turn)
        if turn.wait(timeout):
            return True
        with self.guard:
            if turn.is_set():  # handed over just as the wait ran out: it is ours
                return True
            self.waiting.remove(turn)
            return False

    def release(self) -> None:
        with self.guard:
            if self.waiting:
                self.waiting.popleft().set()  # still held: passed on to the oldest waiter
            else:
                self.held = False
