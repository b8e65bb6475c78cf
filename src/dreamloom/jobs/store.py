"""Where jobs live: the ``JobStore`` protocol workers and the HTTP layer use, and its
embedded implementation on SQLite (WAL), which keeps every accepted job across a crash.

Every method is one short transaction, so any number of threads (and processes on the same
file) can share a store. ``claim`` is the one place that hands work out: it moves queued jobs
to running atomically, so two workers never take the same job.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from dreamloom.jobs.model import Job, JobState, dumps


class QueueFull(Exception):
    """The queue already holds as many unfinished jobs as allowed."""


class JobStore(Protocol):
    """What workers and front ends need from a job store (SQLite here; Redis can follow)."""

    def submit(self, kind: str, request: dict, owner: str = "", batch_key: str | None = None,
               images: int = 1, max_queued: int | None = None, job_id: str | None = None) -> Job: ...
    def claim(self, worker: str, max_images: int, batch_key: str | None = None) -> list[Job]: ...
    def get(self, job_id: str) -> Job | None: ...
    def jobs(self, state: JobState | None = None, owner: str | None = None, limit: int = 100) -> list[Job]: ...
    def progress(self, job_id: str, step: int, total: int, preview: bytes | None = None) -> None: ...
    def preview(self, job_id: str) -> bytes | None: ...
    def finish(self, job_id: str, state: JobState, result: dict | None = None, error: str | None = None) -> None: ...
    def request_cancel(self, job_id: str) -> Job | None: ...
    def request_interrupt(self, job_id: str, skip: bool = False) -> None: ...
    def clear_skip(self, job_id: str) -> None: ...
    def recover(self, stale_after: float) -> list[str]: ...
    def wait_for_work(self, timeout: float) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    batch_key TEXT,
    images INTEGER NOT NULL DEFAULT 1,
    step INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    preview BLOB,
    result TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    interrupt_requested INTEGER NOT NULL DEFAULT 0,
    skip_requested INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    heartbeat REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
"""

_COLUMNS = ("id, kind, request, state, owner, batch_key, images, step, total, result, error, cancel_requested, "
            "interrupt_requested, skip_requested, worker, attempts, created, started, finished")


def new_job_id() -> str:
    return uuid.uuid4().hex


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"], kind=row["kind"], request=json.loads(row["request"]), state=JobState(row["state"]),
        owner=row["owner"], batch_key=row["batch_key"], images=row["images"], step=row["step"], total=row["total"],
        result=json.loads(row["result"]), error=row["error"], cancel_requested=bool(row["cancel_requested"]),
        interrupt_requested=bool(row["interrupt_requested"]), skip_requested=bool(row["skip_requested"]),
        worker=row["worker"], attempts=row["attempts"], created=row["created"], started=row["started"],
        finished=row["finished"],
    )


class SQLiteJobStore:
    """Jobs in one SQLite file (WAL journal, so readers never wait for the worker's writes)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._work = threading.Condition()
        self._local = threading.local()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection to the file, opened once: sqlite3 connections must not cross
        threads, and closing the last one checkpoints the journal (a disk sync), far too slow
        for a write per denoising step."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=NORMAL")  # with WAL every commit survives a crash of the process
            self._local.db = db
        yield db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def submit(self, kind: str, request: dict, owner: str = "", batch_key: str | None = None,
               images: int = 1, max_queued: int | None = None, job_id: str | None = None) -> Job:
        """Store a new queued job, durably, and wake a waiting worker. Raises ``QueueFull`` when
        ``max_queued`` unfinished jobs are already waiting or running. ``job_id`` (from
        ``new_job_id``) lets the caller store the job's input files before submitting it."""
        job = Job(id=job_id or new_job_id(), kind=kind, request=request, owner=owner, batch_key=batch_key,
                  images=images, created=time.time())
        with self._connect() as db:
            db.execute("PRAGMA synchronous=FULL")  # an accepted job survives a power cut too, not only a crash
            try:
                with self._transaction() as tx:
                    if max_queued is not None:
                        (waiting,) = tx.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')").fetchone()
                        if waiting >= max_queued:
                            raise QueueFull(f"the queue is full ({waiting} jobs waiting or running; limit {max_queued})")
                    tx.execute(
                        "INSERT INTO jobs (id, kind, request, state, owner, batch_key, images, created) "
                        "VALUES (?,?,?,?,?,?,?,?)",
                        (job.id, kind, dumps(request), JobState.queued.value, owner, batch_key, images, job.created),
                    )
            finally:
                db.execute("PRAGMA synchronous=NORMAL")
        with self._work:
            self._work.notify_all()
        return job

    def claim(self, worker: str, max_images: int, batch_key: str | None = None) -> list[Job]:
        """Take the oldest queued job, and with it the next queued jobs of the same batch key
        while their images fit in ``max_images``; mark them running for ``worker``. With
        ``batch_key``, take only jobs of that key (to grow a group already claimed)."""
        with self._transaction() as db:
            if batch_key is None:
                first = db.execute("SELECT * FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1").fetchone()
                if first is None:
                    return []
                rows, used, key, after = [first], first["images"], first["batch_key"], first["seq"]
            else:
                rows, used, key, after = [], 0, batch_key, 0
            if key is not None:
                for row in db.execute(
                    "SELECT * FROM jobs WHERE state = 'queued' AND batch_key = ? AND seq > ? ORDER BY seq", (key, after)
                ):
                    if used + row["images"] <= max_images:
                        rows.append(row)
                        used += row["images"]
            if not rows:
                return []
            now = time.time()
            ids = [row["id"] for row in rows]
            db.executemany(
                "UPDATE jobs SET state = 'running', worker = ?, heartbeat = ?, started = ?, step = 0, total = 0, "
                "attempts = attempts + 1, interrupt_requested = 0, skip_requested = 0 WHERE id = ?",
                [(worker, now, now, i) for i in ids],
            )
            return [_job(r) for r in db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE id IN ({','.join('?' * len(ids))}) ORDER BY seq", ids)]

    def get(self, job_id: str) -> Job | None:
        with self._connect() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def jobs(self, state: JobState | None = None, owner: str | None = None, limit: int = 100) -> list[Job]:
        """The newest ``limit`` jobs, newest first, optionally of one state and owner."""
        where, args = [], []
        if state is not None:
            where.append("state = ?")
            args.append(JobState(state).value)
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._connect() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM jobs {clause} ORDER BY seq DESC LIMIT ?", (*args, limit))
            return [_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._connect() as db:
            return {state: n for state, n in db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}

    def progress(self, job_id: str, step: int, total: int, preview: bytes | None = None) -> None:
        """Record a running job's step (and its newest preview PNG); doubles as the worker's heartbeat."""
        with self._connect() as db:
            if preview is None:
                db.execute("UPDATE jobs SET step = ?, total = ?, heartbeat = ? WHERE id = ? AND state = 'running'",
                           (step, total, time.time(), job_id))
            else:
                db.execute("UPDATE jobs SET step = ?, total = ?, heartbeat = ?, preview = ? "
                           "WHERE id = ? AND state = 'running'", (step, total, time.time(), preview, job_id))

    def preview(self, job_id: str) -> bytes | None:
        with self._connect() as db:
            row = db.execute("SELECT preview FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row["preview"] if row else None

    def finish(self, job_id: str, state: JobState, result: dict | None = None, error: str | None = None) -> None:
        if not state.finished:
            raise ValueError(f"{state.value} is not a final state")
        with self._connect() as db:
            db.execute("UPDATE jobs SET state = ?, result = ?, error = ?, finished = ?, preview = NULL WHERE id = ?",
                       (state.value, dumps(result or {}), error, time.time(), job_id))

    def request_cancel(self, job_id: str) -> Job | None:
        """Cancel one job: a queued one at once, a running one at its worker's next step.
        Returns the job as it now stands (None if unknown)."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET state = 'cancelled', finished = ? WHERE id = ? AND state = 'queued'",
                       (time.time(), job_id))
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'running'", (job_id,))
        return self.get(job_id)

    def request_interrupt(self, job_id: str, skip: bool = False) -> None:
        """AUTOMATIC1111's interrupt (stop now, keep what is drawn) or skip (drop the current batch)."""
        column = "skip_requested" if skip else "interrupt_requested"
        with self._connect() as db:
            db.execute(f"UPDATE jobs SET {column} = 1 WHERE id = ? AND state = 'running'", (job_id,))

    def clear_skip(self, job_id: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE jobs SET skip_requested = 0 WHERE id = ?", (job_id,))

    def recover(self, stale_after: float) -> list[str]:
        """Put running jobs whose worker has not reported for ``stale_after`` seconds back in the
        queue (a crashed worker's jobs restart). The embedded server, its own only worker, calls
        this with 0 at start-up."""
        cutoff = time.time() - stale_after
        with self._transaction() as db:
            ids = [r["id"] for r in db.execute(
                "SELECT id FROM jobs WHERE state = 'running' AND (heartbeat IS NULL OR heartbeat <= ?)", (cutoff,))]
            db.executemany("UPDATE jobs SET state = 'queued', worker = NULL, step = 0, total = 0, preview = NULL "
                           "WHERE id = ?", [(i,) for i in ids])
        return ids

    def wait_for_work(self, timeout: float) -> None:
        """Block until a job is submitted in this process, or ``timeout`` passes (jobs submitted
        by another process on the same file are seen at the latest then)."""
        with self._work:
            self._work.wait(timeout)

    def wake(self) -> None:
        with self._work:
            self._work.notify_all()
