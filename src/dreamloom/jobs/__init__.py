"""Jobs: every generation (later every training run and caption) is a job with an id, a state,
progress and result files, kept in a store that survives restarts and taken by workers.

The store/worker boundary is the ``JobStore`` protocol: the embedded store is SQLite plus an
outputs folder; a shared store (Redis) can later serve many worker processes on many hosts
without changing the worker or the HTTP layer.
"""
