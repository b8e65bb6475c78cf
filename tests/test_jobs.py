"""The job store on a real SQLite file, and the worker running real generation jobs."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from dreamloom.generate.request import GenerationRequest
from dreamloom.jobs.events import JobEvents
from dreamloom.jobs.files import JobFiles
from dreamloom.jobs.generation import GenerationRunner, load_request, submit_generation
from dreamloom.jobs.model import JobState
from dreamloom.jobs.store import QueueFull, SQLiteJobStore
from dreamloom.jobs.worker import Worker


@pytest.fixture
def store(tmp_path) -> SQLiteJobStore:
    return SQLiteJobStore(tmp_path / "jobs.sqlite")


def test_claim_takes_oldest_and_batches_compatible_jobs(store):
    a = store.submit("generate", {"n": 0}, batch_key="k1", images=2)
    b = store.submit("generate", {"n": 1}, batch_key="k2", images=1)
    c = store.submit("generate", {"n": 2}, batch_key="k1", images=2)
    d = store.submit("generate", {"n": 3}, batch_key="k1", images=2)
    claimed = store.claim("w", max_images=4)
    assert [j.id for j in claimed] == [a.id, c.id]  # d would exceed 4 images; b has another key
    assert all(j.state == JobState.running and j.worker == "w" and j.attempts == 1 for j in claimed)
    assert [j.id for j in store.claim("w", max_images=4)] == [b.id]
    assert [j.id for j in store.claim("w", max_images=4)] == [d.id]
    assert store.claim("w", max_images=4) == []


def test_unbatchable_jobs_run_alone(store):
    first = store.submit("generate", {}, batch_key=None)
    store.submit("generate", {}, batch_key=None)
    assert [j.id for j in store.claim("w", max_images=8)] == [first.id]


def test_a_second_connection_sees_everything_and_never_double_claims(store, tmp_path):
    jobs = [store.submit("generate", {"i": i}, batch_key=None) for i in range(20)]
    other = SQLiteJobStore(tmp_path / "jobs.sqlite")
    claimed: list[str] = []
    lock = threading.Lock()

    def take(s):
        while batch := s.claim(threading.current_thread().name, 1):
            with lock:
                claimed.extend(j.id for j in batch)

    threads = [threading.Thread(target=take, args=(s,), name=f"w{i}") for i, s in enumerate([store, other] * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(j.id for j in jobs)


def test_cancel_recover_and_queue_limit(store):
    queued = store.submit("generate", {})
    assert store.request_cancel(queued.id).state == JobState.cancelled
    running = store.submit("generate", {})
    store.claim("w", 1)
    assert store.request_cancel(running.id).cancel_requested
    assert store.get(running.id).state == JobState.running  # the worker stops it at its next step
    store.submit("generate", {}, max_queued=2)
    with pytest.raises(QueueFull, match="limit 2"):
        store.submit("generate", {}, max_queued=2)
    assert store.recover(stale_after=0.0) == [running.id]
    assert store.get(running.id).state == JobState.queued and store.get(running.id).step == 0
    with pytest.raises(ValueError, match="not a final state"):
        store.finish(running.id, JobState.running)


def test_files_stay_inside_the_job_folder(tmp_path):
    files = JobFiles(tmp_path)
    (tmp_path / "abc").mkdir()
    (tmp_path / "abc" / "x.png").write_bytes(b"png")
    (tmp_path / "secret.txt").write_text("no")
    assert files.output("abc", "x.png") is not None
    assert files.output("abc", "../secret.txt") is None
    with pytest.raises(ValueError, match="not a job id"):
        files.folder("../etc")


def _pixels(image):
    return np.asarray(image, dtype=np.int16)


def test_worker_batches_jobs_and_each_image_is_the_solo_image(engine, tmp_path):
    store, files, events = SQLiteJobStore(tmp_path / "jobs.sqlite"), JobFiles(tmp_path / "jobs"), JobEvents()
    requests = [
        GenerationRequest(prompt="a red circle", model="random-sd", steps=4, seed=3, batch_size=2),
        GenerationRequest(prompt="a blue square", model="random-sd", steps=4, seed=9, negative_prompt="green"),
        GenerationRequest(prompt="a green star", model="random-sd", steps=4, seed=-1),
        GenerationRequest(prompt="a green star", model="random-sd", steps=5, seed=1),  # other steps: another pass
    ]
    jobs = [submit_generation(store, files, r) for r in requests]
    assert jobs[2].request["seed"] != -1  # drawn at submission, so a restarted job draws the same images
    passes: list[int] = []
    runner = GenerationRunner(engine, store, files, events)
    worker = Worker(store, {"generate": lambda group: (passes.append(len(group)), runner.run(group))}, max_batch=8)
    while worker.run_next():
        pass
    assert passes == [3, 1]
    for job, request in zip(jobs, requests):
        done = store.get(job.id)
        assert done.state == JobState.done and done.step == done.total == request.steps
        solo = engine.generate(load_request(done, files))
        assert done.result["seeds"] == solo.seeds
        for name, image in zip(done.result["files"], solo.images):
            assert np.abs(_pixels(image) - _pixels(_open(files.output(job.id, name)))).max() <= 2


def test_worker_with_batch_size_one_runs_jobs_one_at_a_time(engine, tmp_path):
    store, files = SQLiteJobStore(tmp_path / "jobs.sqlite"), JobFiles(tmp_path / "jobs")
    for seed in (1, 2):
        submit_generation(store, files, GenerationRequest(prompt="a circle", model="random-sd", steps=2, seed=seed))
    passes: list[int] = []
    runner = GenerationRunner(engine, store, files)
    worker = Worker(store, {"generate": lambda group: (passes.append(len(group)), runner.run(group))}, max_batch=1)
    while worker.run_next():
        pass
    assert passes == [1, 1]


def test_a_failing_job_fails_alone(engine, tmp_path):
    store, files = SQLiteJobStore(tmp_path / "jobs.sqlite"), JobFiles(tmp_path / "jobs")
    good = submit_generation(store, files, GenerationRequest(prompt="a circle", model="random-sd", steps=2, seed=1))
    bad = submit_generation(store, files, GenerationRequest(prompt="a circle", model="random-sd", steps=2, seed=2,
                                                            loras=[{"name": "missing", "weight": 1.0}]))
    worker = Worker(store, {"generate": GenerationRunner(engine, store, files).run})
    while worker.run_next():
        pass
    assert store.get(good.id).state == JobState.done
    failed = store.get(bad.id)
    assert failed.state == JobState.failed and "LoRA 'missing' not found" in failed.error


def test_unknown_kind_fails_the_job_not_the_worker(store):
    job = store.submit("paint", {})
    Worker(store, {}).run_next()
    assert store.get(job.id).state == JobState.failed and "no worker for jobs of kind 'paint'" in store.get(job.id).error


def _open(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def test_worker_waits_briefly_to_fill_a_batch(store):
    """A compatible job that arrives while the worker gathers joins the group; another key does not."""
    store.submit("generate", {"n": 0}, batch_key="k")
    groups: list[list[int]] = []
    worker = Worker(store, {"generate": lambda group: groups.append([j.request["n"] for j in group])},
                    max_batch=3, batch_wait=2.0)
    thread = threading.Thread(target=worker.run_next)
    thread.start()
    time.sleep(0.2)
    store.submit("generate", {"n": 1}, batch_key="other")
    store.submit("generate", {"n": 2}, batch_key="k")
    store.submit("generate", {"n": 3}, batch_key="k")
    thread.join(10)
    assert groups == [[0, 2, 3]]  # full at 3 images: no need to wait out the 2 s
    assert [j.request["n"] for j in store.claim("w", 3)] == [1]
    store.submit("generate", {"n": 4}, batch_key="k")
    worker.run_next()
    store.submit("generate", {"n": 5}, batch_key="k")
    start = time.monotonic()
    worker.run_next()  # the last group was alone: no waiting
    assert groups[1:] == [[4], [5]] and time.monotonic() - start < 1.0
