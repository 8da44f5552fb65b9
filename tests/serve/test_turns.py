"""serve/turns.py: the decode lock is handed over in arrival order; a newcomer cannot barge in."""

from __future__ import annotations

import threading
import time

from fixmatch.serve.turns import Turns


def queued(turns: Turns, n: int) -> None:
    deadline = time.monotonic() + 30  # bounds a hang only
    while len(turns.waiting) < n:
        assert time.monotonic() < deadline, "the waiters never queued"
        time.sleep(0.001)


def test_the_lock_goes_to_the_oldest_waiter_and_no_newcomer_takes_it():
    turns, order, release = Turns(), [], {name: threading.Event() for name in "AB"}
    assert turns.acquire(timeout=1)

    def waiter(name: str) -> None:
        assert turns.acquire(timeout=60)
        order.append(name)
        release[name].wait(60)
        turns.release()

    threads = []
    for n, name in enumerate("AB", 1):
        threads.append(threading.Thread(target=waiter, args=(name,)))
        threads[-1].start()
        queued(turns, n)
    turns.release()  # to A, the oldest
    assert not turns.acquire(timeout=0)  # a newcomer arriving now waits its turn (and gives up at once)
    release["A"].set()
    release["B"].set()
    for t in threads:
        t.join(60)
    assert order == ["A", "B"]
    assert turns.acquire(timeout=0)  # free again once every waiter is done


def test_a_waiter_that_gives_up_leaves_the_queue():
    turns = Turns()
    assert turns.acquire(timeout=1)
    assert not turns.acquire(timeout=0.01)
    assert not turns.waiting
    turns.release()
    assert not turns.held
