"""The worker: takes jobs from the store in order (compatible ones together) and runs them,
keeping their leases alive, and requeues the jobs of workers that died.

It talks to the store only through ``JobStore``, so the same worker can run in many processes
on many hosts against a shared store."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from dreamloom.jobs.lease import Claim, kept_alive
from dreamloom.jobs.model import Job, JobState, describe
from dreamloom.jobs.store import JobStore

log = logging.getLogger(__name__)

#: Runs a claimed group of jobs of one kind to their final states (``Claim.finish``).
Handler = Callable[[list[Claim]], None]


class Worker:
    """A thread that claims up to ``max_batch`` images' worth of compatible queued jobs at a
    time and hands them to the handler of their kind. ``max_batch=1`` runs one job at a time.

    ``batch_wait`` seconds are spent gathering compatible jobs when a group has room left:
    clients that resubmit as soon as their last images arrive reach the queue a few
    milliseconds after the worker is free again, and would otherwise each run alone (the
    dynamic-batching delay of inference servers). It is spent only while the previous group
    had company, so a lone client never waits (it must stay well under the lease: jobs
    claimed while gathering are not yet heartbeating).

    Every third of a lease, the running thread also requeues jobs whose lease expired (any
    worker's: one that died, or hung), as cog's queue reclaims stale stream entries first.
    ``name`` identifies the worker in the store; a fixed one lets a restarted process
    ``recover(worker=name)`` its previous run's jobs at once instead of a lease later."""

    def __init__(self, store: JobStore, handlers: dict[str, Handler], max_batch: int = 8, poll_seconds: float = 1.0,
                 batch_wait: float = 0.0, name: str | None = None):
        self.store, self.handlers, self.max_batch = store, handlers, max_batch
        self.batch_wait = batch_wait
        self._gathering = True  # the last group held several jobs: others are likely on their way
        self.poll_seconds = poll_seconds
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="dreamloom-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self.store.wake()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_next(self) -> list[Job]:
        """Claim and run the next group of jobs; returns them (empty when the queue is empty)."""
        jobs = self.store.claim(self.name, self.max_batch)
        if not jobs:
            return []
        if self._gathering:
            jobs += self._gather(jobs)
        self._gathering = len(jobs) > 1
        claims = [Claim(self.store, job) for job in jobs]
        handler = self.handlers.get(jobs[0].kind)
        with kept_alive(claims, self.store.lease_seconds / 3):
            try:
                if handler is None:
                    raise ValueError(f"no worker for jobs of kind {jobs[0].kind!r}")
                handler(claims)
            except Exception as error:  # the worker outlives any job
                log.exception("jobs %s failed", [j.id for j in jobs])
                for claim in claims:
                    claim.finish(JobState.failed, error=describe(error))
        return jobs

    def _gather(self, group: list[Job]) -> list[Job]:
        """More queued jobs of the group's batch key, for up to ``batch_wait`` seconds."""
        key, room = group[0].batch_key, self.max_batch - sum(job.images for job in group)
        deadline = time.monotonic() + self.batch_wait
        more: list[Job] = []
        while key is not None and room > 0 and self.batch_wait > 0:
            found = self.store.claim(self.name, room, batch_key=key)
            more += found
            room -= sum(job.images for job in found)
            left = deadline - time.monotonic()
            if room <= 0 or left <= 0:
                break
            self.store.wait_for_work(left)
        return more

    def _loop(self) -> None:
        next_recover = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_recover:
                if requeued := self.store.recover():
                    log.warning("requeued jobs whose lease expired: %s", requeued)
                next_recover = time.monotonic() + self.store.lease_seconds / 3
            if not self.run_next():
                self.store.wait_for_work(min(self.poll_seconds, self.store.lease_seconds / 3))
