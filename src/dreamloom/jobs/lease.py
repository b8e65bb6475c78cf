"""A claimed job as its worker holds it: every write carries the claim's fencing token, and
the store's requests (cancel, interrupt, skip) and a lost lease become events the running
code obeys. A heartbeat thread keeps the lease alive for as long as a handler runs, so a
minutes-long model load or first compile never looks like a dead worker."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dreamloom.jobs.model import Job, JobState
from dreamloom.jobs.store import JobStore, LeaseLost

log = logging.getLogger(__name__)


class Claim:
    """One claimed job. ``cancel``, ``interrupt`` and ``skip`` are set when the store reports
    the request (on a heartbeat or a progress write); a lost lease sets ``cancel`` too, so the
    run stops, and every later write is dropped: another worker owns the job now."""

    def __init__(self, store: JobStore, job: Job):
        self.store, self.job = store, job
        self.cancel, self.interrupt, self.skip = threading.Event(), threading.Event(), threading.Event()
        self.lost = False
        self.finished = False
        self._lock = threading.Lock()  # the heartbeat thread and the runner write for one claim

    @property
    def id(self) -> str:
        return self.job.id

    def heartbeat(self) -> None:
        self._write(lambda: self.store.heartbeat(self.id, self.job.token))

    def progress(self, step: int, total: int, preview: bytes | None = None) -> None:
        self._write(lambda: self.store.progress(self.id, self.job.token, step, total, preview))

    def finish(self, state: JobState, result: dict | None = None, error: str | None = None) -> None:
        """End the job, once; a claim whose lease was lost ends nothing."""
        with self._lock:
            if self.finished or self.lost:
                return
            try:
                self.store.finish(self.id, self.job.token, state, result, error)
            except LeaseLost:
                self._lose()
            self.finished = True

    def _write(self, call: Callable[[], Job]) -> None:
        with self._lock:
            if self.finished or self.lost:
                return
            try:
                self._obey(call())
            except LeaseLost:
                self._lose()

    def _obey(self, job: Job) -> None:
        if job.cancel_requested:
            self.cancel.set()
        if job.interrupt_requested:
            self.interrupt.set()
        if job.skip_requested:
            self.store.clear_skip(self.id, self.job.token)
            self.skip.set()

    def _lose(self) -> None:
        log.warning("job %s: lease lost (token %d); stopping without reporting", self.id, self.job.token)
        self.lost = True
        self.cancel.set()


@contextmanager
def kept_alive(claims: list[Claim], interval: float) -> Iterator[None]:
    """Heartbeat every claim every ``interval`` seconds while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            for claim in claims:
                try:
                    claim.heartbeat()
                except Exception:  # a busy database must not end the heartbeats; the next beat retries
                    log.exception("job %s: heartbeat failed", claim.id)

    thread = threading.Thread(target=beat, name="dreamloom-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
