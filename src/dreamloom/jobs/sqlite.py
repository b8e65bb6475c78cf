"""The embedded job store: SQLite (WAL) plus a folder of job files, which keeps every
accepted job across a crash.

Every method is one short statement or transaction, so any number of threads (and processes
on the same file) can share it. Subscribers in this process are woken at once; changes made by
another process on the same file are seen within ``recheck_seconds``, SQLite having no way to
notify across processes."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from dreamloom.jobs.blobs import BlobStore
from dreamloom.jobs.model import Job, JobState, dumps
from dreamloom.jobs.notify import Notifier, Subscription
from dreamloom.jobs.store import JobStore, LeaseLost, QueueFull, new_job_id

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
    lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
"""

_COLUMNS = ("id, kind, request, state, owner, batch_key, images, step, total, result, error, cancel_requested, "
            "interrupt_requested, skip_requested, worker, attempts, lease_until, created, started, finished")

_UNFINISHED = "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')"
#: A write by the claim's own worker: the job is running and the token is current.
_HELD = "id = ? AND state = 'running' AND attempts = ?"


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"], kind=row["kind"], request=json.loads(row["request"]), state=JobState(row["state"]),
        owner=row["owner"], batch_key=row["batch_key"], images=row["images"], step=row["step"], total=row["total"],
        result=json.loads(row["result"]), error=row["error"], cancel_requested=bool(row["cancel_requested"]),
        interrupt_requested=bool(row["interrupt_requested"]), skip_requested=bool(row["skip_requested"]),
        worker=row["worker"], attempts=row["attempts"], lease_until=row["lease_until"], created=row["created"],
        started=row["started"], finished=row["finished"],
    )


class SQLiteJobStore(JobStore):
    """Jobs in one SQLite file (WAL journal, so readers never wait for the worker's writes),
    their files in ``blobs``."""

    def __init__(self, path: Path, blobs: BlobStore, lease_seconds: float = 30.0, recheck_seconds: float = 2.0):
        self.path, self.blobs, self.lease_seconds = Path(path), blobs, lease_seconds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._notifier = Notifier(recheck=recheck_seconds)
        self._work = threading.Condition()
        self._local = threading.local()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            if "lease_until" not in {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}:
                # a jobs file from before leases: its running jobs have none, so recover takes them
                db.execute("ALTER TABLE jobs ADD COLUMN lease_until REAL")

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

    def _changed(self, *job_ids: str) -> None:
        for job_id in job_ids:
            self._notifier.publish(job_id)

    def submit(self, kind: str, request: dict, owner: str = "", batch_key: str | None = None, images: int = 1,
               max_queued: int | None = None, inputs: dict[str, Image.Image] | None = None,
               max_owner_queued: int | None = None) -> Job:
        job = Job(id=new_job_id(), kind=kind, request=request, owner=owner, batch_key=batch_key, images=images,
                  created=time.time())
        try:
            for name, image in (inputs or {}).items():
                self.blobs.save_input(job.id, name, image)
            self._insert(job, max_queued, max_owner_queued)
        except BaseException:
            self.blobs.remove(job.id)
            raise
        with self._work:
            self._work.notify_all()
        self._changed(job.id)
        return job

    def _insert(self, job: Job, max_queued: int | None, max_owner_queued: int | None) -> None:
        with self._connect() as db:
            db.execute("PRAGMA synchronous=FULL")  # an accepted job survives a power cut too, not only a crash
            try:
                with self._transaction() as tx:
                    if max_queued is not None:
                        (waiting,) = tx.execute(_UNFINISHED).fetchone()
                        if waiting >= max_queued:
                            raise QueueFull(f"the queue is full ({waiting} jobs waiting or running; "
                                            f"limit {max_queued})")
                    if max_owner_queued is not None:
                        (mine,) = tx.execute(_UNFINISHED + " AND owner = ?", (job.owner,)).fetchone()
                        if mine >= max_owner_queued:
                            raise QueueFull(f"you have {mine} jobs waiting or running, this server's limit per "
                                            f"user; wait for one to finish")
                    tx.execute(
                        "INSERT INTO jobs (id, kind, request, state, owner, batch_key, images, created) "
                        "VALUES (?,?,?,?,?,?,?,?)",
                        (job.id, job.kind, dumps(job.request), JobState.queued.value, job.owner, job.batch_key,
                         job.images, job.created),
                    )
            finally:
                db.execute("PRAGMA synchronous=NORMAL")

    def get(self, job_id: str) -> Job | None:
        with self._connect() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def jobs(self, state: JobState | None = None, owner: str | None = None, limit: int = 100) -> list[Job]:
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

    def counts(self, owner: str | None = None) -> dict[str, int]:
        where, args = ("WHERE owner = ?", (owner,)) if owner is not None else ("", ())
        with self._connect() as db:
            return {state: n for state, n in db.execute(f"SELECT state, COUNT(*) FROM jobs {where} GROUP BY state",
                                                        args)}

    def preview(self, job_id: str) -> bytes | None:
        with self._connect() as db:
            row = db.execute("SELECT preview FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row["preview"] if row else None

    def request_cancel(self, job_id: str) -> Job | None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET state = 'cancelled', finished = ? WHERE id = ? AND state = 'queued'",
                       (time.time(), job_id))
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'running'", (job_id,))
        self._changed(job_id)
        return self.get(job_id)

    def request_interrupt(self, job_id: str, skip: bool = False) -> Job | None:
        column = "skip_requested" if skip else "interrupt_requested"
        with self._connect() as db:
            db.execute(f"UPDATE jobs SET {column} = 1 WHERE id = ? AND state = 'running'", (job_id,))
        self._changed(job_id)
        return self.get(job_id)

    def subscribe(self, job_id: str) -> Subscription:
        return self._notifier.subscribe(job_id)

    def claim(self, worker: str, max_images: int, batch_key: str | None = None) -> list[Job]:
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
                "UPDATE jobs SET state = 'running', worker = ?, lease_until = ?, started = ?, step = 0, total = 0, "
                "attempts = attempts + 1, interrupt_requested = 0, skip_requested = 0 WHERE id = ?",
                [(worker, now + self.lease_seconds, now, i) for i in ids],
            )
            claimed = [_job(r) for r in db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE id IN ({','.join('?' * len(ids))}) ORDER BY seq", ids)]
        self._changed(*ids)
        return claimed

    def _held(self, job_id: str, token: int, assignments: str, args: tuple) -> Job:
        """Apply a worker's write to the job its token still holds, or raise ``LeaseLost``."""
        with self._connect() as db:
            if db.execute(f"UPDATE jobs SET {assignments} WHERE {_HELD}", (*args, job_id, token)).rowcount == 0:
                raise LeaseLost(f"job {job_id} is no longer held with token {token}")
        job = self.get(job_id)
        assert job is not None  # jobs are never deleted
        return job

    def heartbeat(self, job_id: str, token: int) -> Job:
        return self._held(job_id, token, "lease_until = ?", (time.time() + self.lease_seconds,))

    def progress(self, job_id: str, token: int, step: int, total: int, preview: bytes | None = None) -> Job:
        lease = time.time() + self.lease_seconds
        if preview is None:
            job = self._held(job_id, token, "step = ?, total = ?, lease_until = ?", (step, total, lease))
        else:
            job = self._held(job_id, token, "step = ?, total = ?, lease_until = ?, preview = ?",
                             (step, total, lease, preview))
        self._changed(job_id)
        return job

    def finish(self, job_id: str, token: int, state: JobState, result: dict | None = None,
               error: str | None = None) -> Job:
        if not state.finished:
            raise ValueError(f"{state.value} is not a final state")
        job = self._held(job_id, token, "state = ?, result = ?, error = ?, finished = ?, preview = NULL, "
                         "lease_until = NULL", (state.value, dumps(result or {}), error, time.time()))
        self._changed(job_id)
        return job

    def clear_skip(self, job_id: str, token: int) -> None:
        self._held(job_id, token, "skip_requested = 0", ())
        self._changed(job_id)

    def recover(self, worker: str | None = None) -> list[str]:
        now = time.time()
        with self._transaction() as db:
            rows = db.execute("SELECT id, cancel_requested FROM jobs WHERE state = 'running' AND "
                              "(lease_until IS NULL OR lease_until <= ? OR worker = ?)", (now, worker)).fetchall()
            db.executemany("UPDATE jobs SET state = 'cancelled', finished = ?, preview = NULL, lease_until = NULL "
                           "WHERE id = ?", [(now, r["id"]) for r in rows if r["cancel_requested"]])
            db.executemany("UPDATE jobs SET state = 'queued', worker = NULL, step = 0, total = 0, preview = NULL, "
                           "lease_until = NULL WHERE id = ?", [(r["id"],) for r in rows if not r["cancel_requested"]])
        ids = [r["id"] for r in rows]
        if ids:
            with self._work:
                self._work.notify_all()
        self._changed(*ids)
        return ids

    def wait_for_work(self, timeout: float) -> None:
        """Jobs submitted by another process on the same file are seen at the latest after ``timeout``."""
        with self._work:
            self._work.wait(timeout)

    def wake(self) -> None:
        with self._work:
            self._work.notify_all()
