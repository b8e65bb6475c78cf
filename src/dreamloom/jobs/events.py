"""Job changes pushed to whoever waits on them (an HTTP request awaiting its job, a
server-sent-events stream), across the worker thread and the server's event loop, so nothing
polls the store in a sleep loop."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict


class JobEvents:
    """In-process publish/subscribe keyed by job id. The worker calls ``publish`` from its
    thread; async subscribers get a wake-up on their own event loop. (A shared store across
    hosts would publish through its own channel, e.g. Redis pub/sub, into the same interface.)"""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = defaultdict(set)
        self._lock = threading.Lock()

    def publish(self, job_id: str) -> None:
        with self._lock:
            targets = list(self._subscribers.get(job_id, ()))
        for loop, event in targets:
            loop.call_soon_threadsafe(event.set)

    def subscribe(self, job_id: str) -> tuple[asyncio.AbstractEventLoop, asyncio.Event]:
        """An event set whenever ``job_id`` changes; call from a coroutine, and ``unsubscribe`` after."""
        token = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._subscribers[job_id].add(token)
        return token

    def unsubscribe(self, job_id: str, token: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            subscribers = self._subscribers.get(job_id)
            if subscribers is not None:
                subscribers.discard(token)
                if not subscribers:
                    del self._subscribers[job_id]
