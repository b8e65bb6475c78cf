"""The job-store contract: everything workers and front ends need, and nothing else, so the
embedded store (SQLite plus a folder, ``jobs.sqlite``) and a shared one (Redis, for many worker
processes on many hosts) are interchangeable; both must pass ``tests/test_store_contract.py``.

The store owns three things callers used to do beside it:

* notification: every change it makes (submit, claim, progress, finish, cancel, interrupt,
  skip, recover) wakes the job's subscribers; callers never publish;
* files: inputs, outputs and a work folder per job (``blobs``);
* leases: a claim is held for ``lease_seconds`` unless its worker heartbeats, and every write
  a worker makes carries the claim's fencing token, so a worker that lost its claim (it looked
  dead, the job was recovered and claimed again) can change nothing (``LeaseLost``).
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from PIL import Image

from dreamloom.jobs.blobs import BlobStore
from dreamloom.jobs.model import Job, JobState
from dreamloom.jobs.notify import Subscription


class QueueFull(Exception):
    """The queue already holds as many unfinished jobs as allowed."""


class LeaseLost(Exception):
    """A worker's write carried a stale fencing token: the job is no longer its to report on
    (recovered after its lease expired, claimed by another worker, or finished)."""


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStore(ABC):
    """Jobs, their files and their change notifications. Every method is safe from any thread."""

    blobs: BlobStore
    #: How long a claim lasts without a heartbeat; workers heartbeat every third of it.
    lease_seconds: float

    # -- front ends ------------------------------------------------------------------------

    @abstractmethod
    def submit(self, kind: str, request: dict, owner: str = "", batch_key: str | None = None, images: int = 1,
               max_queued: int | None = None, inputs: dict[str, Image.Image] | None = None,
               max_owner_queued: int | None = None) -> Job:
        """Store a new queued job, durably, with its input images, and wake a waiting worker.
        Raises ``QueueFull`` (keeping nothing) when ``max_queued`` unfinished jobs already wait
        or run, or ``max_owner_queued`` of ``owner``'s. ``images`` is the job's share of a batch; jobs with an equal ``batch_key`` may
        share a forward pass."""

    @abstractmethod
    def get(self, job_id: str) -> Job | None: ...

    @abstractmethod
    def jobs(self, state: JobState | None = None, owner: str | None = None, limit: int = 100) -> list[Job]:
        """The newest ``limit`` jobs, newest first, optionally of one state and owner."""

    @abstractmethod
    def counts(self, owner: str | None = None) -> dict[str, int]:
        """How many jobs (of ``owner``'s, when given) are in each state (states without jobs left out)."""

    @abstractmethod
    def preview(self, job_id: str) -> bytes | None:
        """The newest preview PNG of a running job."""

    @abstractmethod
    def request_cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once, a running one at its worker's next step or heartbeat.
        Returns the job as it now stands (None if unknown)."""

    @abstractmethod
    def request_interrupt(self, job_id: str, skip: bool = False) -> Job | None:
        """AUTOMATIC1111's interrupt (stop now, keep what is drawn) or skip (drop the current
        batch, go on) of a running job. Returns the job as it now stands."""

    @abstractmethod
    def subscribe(self, job_id: str) -> Subscription:
        """Wake-ups for every change of the job (made by this process or, within the
        subscription's recheck bound, another); use in a ``with`` block."""

    async def watch(self, job_id: str) -> AsyncIterator[Job]:
        """The job now and after every change (or recheck) until it is finished or unknown;
        for a FastAPI handler or a Gradio async generator on the event loop."""
        with self.subscribe(job_id) as subscription:
            while (job := self.get(job_id)) is not None:
                yield job
                if job.state.finished:
                    return
                await subscription.changed()

    async def wait(self, job_id: str) -> Job | None:
        """The job once it is finished (None if unknown)."""
        job = None
        async for job in self.watch(job_id):
            pass
        return job

    # -- workers ---------------------------------------------------------------------------

    @abstractmethod
    def claim(self, worker: str, max_images: int, batch_key: str | None = None) -> list[Job]:
        """Take the oldest queued job and the next queued jobs of its batch key while their
        images fit in ``max_images`` (with ``batch_key``: only jobs of that key, to grow a
        group), atomically, so no two workers take one job. Each comes back running, with a
        new, higher ``token`` and ``lease_until`` a lease from now."""

    @abstractmethod
    def heartbeat(self, job_id: str, token: int) -> Job:
        """Extend the claim's lease; returns the job, so the worker sees a cancel, interrupt or
        skip request. Raises ``LeaseLost`` for a stale token."""

    @abstractmethod
    def progress(self, job_id: str, token: int, step: int, total: int, preview: bytes | None = None) -> Job:
        """Record a running job's step (and newest preview PNG); also a heartbeat. Raises
        ``LeaseLost`` for a stale token, changing nothing."""

    @abstractmethod
    def finish(self, job_id: str, token: int, state: JobState, result: dict | None = None,
               error: str | None = None) -> Job:
        """End a running job in a final ``state``. Raises ``LeaseLost`` for a stale token,
        changing nothing, and ValueError for a state that is not final."""

    @abstractmethod
    def clear_skip(self, job_id: str, token: int) -> None:
        """The worker has acted on a skip request. Raises ``LeaseLost`` for a stale token."""

    @abstractmethod
    def recover(self, worker: str | None = None) -> list[str]:
        """Requeue running jobs whose lease has expired (their worker died or hangs), and with
        ``worker`` also every job that worker holds, whatever its lease: the caller knows it is
        dead (a restarted embedded server recovering its own previous run). A job whose cancel
        was requested ends cancelled instead. Returns the ids requeued or cancelled."""

    @abstractmethod
    def wait_for_work(self, timeout: float) -> None:
        """Block until a job may have been submitted, or ``timeout`` passes."""

    @abstractmethod
    def wake(self) -> None:
        """Wake every ``wait_for_work`` now (a worker is stopping)."""
