"""Wake-ups for whoever follows a job: an HTTP request awaiting it, an event stream, a page,
a test thread. The store publishes every change it makes; nothing polls in a sleep loop.

The worker writes from its own thread while followers wait on the server's event loop (or in
a thread), so a wake-up crosses threads: a ``threading.Event`` records it, and an awaiting
coroutine is woken through its loop's ``call_soon_threadsafe``."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict


class Subscription:
    """One follower's wake-ups for one job; use it in a ``with`` block.

    ``recheck`` caps every wait, for stores that cannot hear changes made by other processes
    (SQLite): the follower then re-reads at least that often. A notification that arrives
    between two waits is kept, never lost."""

    def __init__(self, notifier: Notifier, key: str, recheck: float | None):
        self._notifier, self.key, self._recheck = notifier, key, recheck
        self._flag = threading.Event()
        self._lock = threading.Lock()
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def _bound(self, timeout: float | None) -> float | None:
        if self._recheck is None:
            return timeout
        return self._recheck if timeout is None else min(timeout, self._recheck)

    def _take(self) -> bool:
        fired = self._flag.is_set()
        self._flag.clear()
        return fired

    def notify(self) -> None:
        self._flag.set()
        with self._lock:
            waiter = self._waiter
        if waiter is not None:
            loop, event = waiter
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed: nobody is waiting there any more
                pass

    def wait(self, timeout: float | None = None) -> bool:
        """Block this thread until the job changes; True if it did, False when the (capped)
        timeout passed first (re-read anyway: another process may have changed it)."""
        self._flag.wait(self._bound(timeout))
        return self._take()

    async def changed(self, timeout: float | None = None) -> bool:
        """``wait`` for a coroutine: the event loop runs on while it waits."""
        if not self._flag.is_set():
            event = asyncio.Event()
            with self._lock:
                self._waiter = (asyncio.get_running_loop(), event)
            try:
                if not self._flag.is_set():  # set before the waiter was registered
                    await asyncio.wait_for(event.wait(), self._bound(timeout))
            except TimeoutError:
                pass
            finally:
                with self._lock:
                    self._waiter = None
        return self._take()

    def close(self) -> None:
        self._notifier.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_) -> None:
        self.close()


class Notifier:
    """In-process publish/subscribe keyed by job id, safe from any thread."""

    def __init__(self, recheck: float | None = None):
        self.recheck = recheck
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._lock = threading.Lock()

    def subscribe(self, key: str) -> Subscription:
        subscription = Subscription(self, key, self.recheck)
        with self._lock:
            self._subscribers[key].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            subscribers = self._subscribers.get(subscription.key)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[subscription.key]

    def publish(self, key: str) -> None:
        with self._lock:
            targets = list(self._subscribers.get(key, ()))
        for subscription in targets:
            subscription.notify()
