"""What every job runner does when a job changes: write it to the store, then wake whoever
waits on it (an HTTP request, an event stream, a page following the job)."""

from __future__ import annotations

from dreamloom.jobs.events import JobEvents
from dreamloom.jobs.model import Job, JobState
from dreamloom.jobs.store import JobStore


def describe(error: Exception) -> str:
    """A failed job's error as its record shows it: the exception's type and message."""
    return f"{type(error).__name__}: {error}"


class JobReporter:
    def __init__(self, store: JobStore, events: JobEvents | None = None):
        self.store, self.events = store, events

    def publish(self, job_id: str) -> None:
        if self.events is not None:
            self.events.publish(job_id)

    def finish(self, job: Job, state: JobState, result: dict | None = None, error: str | None = None) -> None:
        self.store.finish(job.id, state, result, error)
        self.publish(job.id)
