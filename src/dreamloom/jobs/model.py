"""What a job is: its states and the record the store keeps of it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import Enum


class JobState(str, Enum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.done, JobState.failed, JobState.cancelled)


@dataclass
class Job:
    """One job as stored. ``request`` is the kind's request as JSON data; ``batch_key`` is set
    when queued jobs with an equal key may share a forward pass; ``images`` is how many images
    it draws per pass (its share of a batch). ``result`` holds what the kind returns (for
    generation: files, seeds, infotexts).

    ``attempts`` counts claims and is the job's fencing token: a worker writes progress and
    the result with the token its claim returned, so once the job was recovered and claimed
    again (a higher token) the first worker's writes are refused. ``lease_until`` is when a
    running job's claim expires unless its worker heartbeats."""

    id: str
    kind: str
    request: dict
    state: JobState = JobState.queued
    owner: str = ""
    batch_key: str | None = None
    images: int = 1
    step: int = 0
    total: int = 0
    result: dict = field(default_factory=dict)
    error: str | None = None
    cancel_requested: bool = False
    interrupt_requested: bool = False
    skip_requested: bool = False
    worker: str | None = None
    attempts: int = 0
    lease_until: float | None = None
    created: float = 0.0
    started: float | None = None
    finished: float | None = None

    @property
    def token(self) -> int:
        """The fencing token of the current claim."""
        return self.attempts

    @property
    def progress(self) -> float:
        if self.state == JobState.done:
            return 1.0
        return self.step / self.total if self.total else 0.0

    def public(self) -> dict:
        """The job as the HTTP API shows it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state.value,
            "progress": {"step": self.step, "total": self.total, "fraction": round(self.progress, 4),
                         "eta_seconds": self.eta_seconds()},
            "request": self.request,
            "result": self.result,
            "error": self.error,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Time left, extrapolated from the steps done so far; None before the first step."""
        if self.state != JobState.running or not self.started or not self.step or not self.total:
            return None
        elapsed = (now or time.time()) - self.started
        return round(elapsed * (self.total - self.step) / self.step, 3)


def describe(error: Exception) -> str:
    """A failed job's error as its record shows it: the exception's type and message."""
    return f"{type(error).__name__}: {error}"


def dumps(data: dict) -> str:
    return json.dumps(data, separators=(",", ":"))
