"""Jobs: every generation and training run is a job with an id, a state, progress and result
files, kept in a store that survives restarts and taken by workers under a lease.

Callers open a store with ``open_store`` and use it only through ``JobStore`` (store.py), so
a shared store (Redis, for workers on many hosts) can replace the embedded one without
changing the worker, the runners or the HTTP layer.
"""

from __future__ import annotations

from pathlib import Path

from dreamloom.jobs.blobs import LocalBlobs
from dreamloom.jobs.sqlite import SQLiteJobStore
from dreamloom.jobs.store import JobStore


def open_store(data_dir: Path, lease_seconds: float = 30.0, recheck_seconds: float = 2.0) -> JobStore:
    """The job store of ``data_dir``: ``jobs.sqlite`` and the ``jobs/`` folder of job files.

    ``lease_seconds``: how long a claimed job stays its worker's without a heartbeat (workers
    beat every third of it); ``recheck_seconds``: how soon a follower sees a change made by
    another process on the same data dir."""
    data_dir = Path(data_dir)
    return SQLiteJobStore(data_dir / "jobs.sqlite", LocalBlobs(data_dir / "jobs"), lease_seconds, recheck_seconds)
