"""The worker running real generation jobs from a real store: batching, leases kept alive
by heartbeats, a lost lease stopping the run. (The store itself: test_store_contract.py.)"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from dreamloom.generate.request import GenerationRequest
from dreamloom.jobs import open_store
from dreamloom.jobs.generation import GenerationRunner, load_request, submit_generation
from dreamloom.jobs.lease import Claim
from dreamloom.jobs.model import JobState
from dreamloom.jobs.store import JobStore
from dreamloom.jobs.worker import Worker


@pytest.fixture
def store(tmp_path) -> JobStore:
    return open_store(tmp_path)


def _pixels(image):
    return np.asarray(image, dtype=np.int16)


def test_worker_batches_jobs_and_each_image_is_the_solo_image(engine, store):
    requests = [
        GenerationRequest(prompt="a red circle", model="random-sd", steps=4, seed=3, batch_size=2),
        GenerationRequest(prompt="a blue square", model="random-sd", steps=4, seed=9, negative_prompt="green"),
        GenerationRequest(prompt="a green star", model="random-sd", steps=4, seed=-1),
        GenerationRequest(prompt="a green star", model="random-sd", steps=5, seed=1),  # other steps: another pass
    ]
    jobs = [submit_generation(store, r) for r in requests]
    assert jobs[2].request["seed"] != -1  # drawn at submission, so a restarted job draws the same images
    passes: list[int] = []
    runner = GenerationRunner(engine, store)
    worker = Worker(store, {"generate": lambda group: (passes.append(len(group)), runner.run(group))}, max_batch=8)
    while worker.run_next():
        pass
    assert passes == [3, 1]
    for job, request in zip(jobs, requests):
        done = store.get(job.id)
        assert done.state == JobState.done and done.step == done.total == request.steps
        solo = engine.generate(load_request(done, store))
        assert done.result["seeds"] == solo.seeds
        for name, image in zip(done.result["files"], solo.images):
            assert np.abs(_pixels(image) - _pixels(_open(store.blobs.output_path(job.id, name)))).max() <= 2


def test_worker_with_batch_size_one_runs_jobs_one_at_a_time(engine, store):
    for seed in (1, 2):
        submit_generation(store, GenerationRequest(prompt="a circle", model="random-sd", steps=2, seed=seed))
    passes: list[int] = []
    runner = GenerationRunner(engine, store)
    worker = Worker(store, {"generate": lambda group: (passes.append(len(group)), runner.run(group))}, max_batch=1)
    while worker.run_next():
        pass
    assert passes == [1, 1]


def test_a_failing_job_fails_alone(engine, store):
    good = submit_generation(store, GenerationRequest(prompt="a circle", model="random-sd", steps=2, seed=1))
    bad = submit_generation(store, GenerationRequest(prompt="a circle", model="random-sd", steps=2, seed=2,
                                                     loras=[{"name": "missing", "weight": 1.0}]))
    worker = Worker(store, {"generate": GenerationRunner(engine, store).run})
    while worker.run_next():
        pass
    assert store.get(good.id).state == JobState.done
    failed = store.get(bad.id)
    assert failed.state == JobState.failed and "LoRA 'missing' not found" in failed.error


def test_unknown_kind_fails_the_job_not_the_worker(store):
    job = store.submit("paint", {})
    Worker(store, {}).run_next()
    failed = store.get(job.id)
    assert failed.state == JobState.failed and "no worker for jobs of kind 'paint'" in failed.error


def _open(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def test_worker_waits_briefly_to_fill_a_batch(store):
    """A compatible job that arrives while the worker gathers joins the group; another key does not."""
    store.submit("generate", {"n": 0}, batch_key="k")
    groups: list[list[int]] = []
    worker = Worker(store, {"generate": lambda group: groups.append([c.job.request["n"] for c in group])},
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


def test_img2img_runs_alone_with_its_stored_init_image(engine, store):
    from PIL import Image

    request = GenerationRequest(prompt="a circle", model="random-sd", steps=4, seed=5,
                                init_image=Image.new("RGB", (64, 64), (250, 0, 0)), denoising_strength=0.5)
    job = submit_generation(store, request)
    assert store.blobs.inputs(job.id) == ["init_image"]
    Worker(store, {"generate": GenerationRunner(engine, store).run}).run_next()
    done = store.get(job.id)
    assert done.state == JobState.done, done.error
    assert load_request(done, store).init_image.getpixel((0, 0)) == (250, 0, 0)


def test_a_jobs_outputs_go_through_the_engines_save_hooks(engine, store):
    from dreamloom.generate.engine import Engine
    from dreamloom.generate.hooks import Stage
    from dreamloom.generate.infotext import parse_infotext
    from dreamloom.images import decode_image

    local = Engine(engine.settings, engine.models)
    seen = []
    local.hooks.add(Stage.save, lambda infotext, path: (seen.append(path.name), f"{infotext}, Saved as: {path.name}")[1])
    job = submit_generation(store, GenerationRequest(prompt="a star", model="random-sd", steps=2, seed=7, batch_size=2))
    Worker(store, {"generate": GenerationRunner(local, store).run}).run_next()
    done = store.get(job.id)
    assert done.state == JobState.done, done.error
    assert seen == done.result["files"] == ["00000-7.png", "00001-8.png"]
    for name in seen:
        stored = decode_image(store.blobs.get_output(job.id, name)).info["parameters"]
        assert parse_infotext(stored)["Saved as"] == name


def test_heartbeats_keep_a_long_silent_handler_alive(tmp_path):
    """A handler that reports no step for three leases (a model load) keeps its job."""
    store = open_store(tmp_path, lease_seconds=0.6)
    job = store.submit("generate", {})
    seen: list[list[str]] = []

    def load_for_a_while(claims: list[Claim]) -> None:
        time.sleep(1.8)
        seen.append(store.recover())  # another worker looking for dead jobs finds none
        claims[0].finish(JobState.done)

    Worker(store, {"generate": load_for_a_while}).run_next()
    assert seen == [[]] and store.get(job.id).state == JobState.done


def test_cancel_reaches_a_silent_handler_through_its_heartbeat(tmp_path):
    store = open_store(tmp_path, lease_seconds=0.3)
    job = store.submit("generate", {})

    def wait_for_cancel(claims: list[Claim]) -> None:
        store.request_cancel(job.id)
        assert claims[0].cancel.wait(5)
        claims[0].finish(JobState.cancelled)

    Worker(store, {"generate": wait_for_cancel}).run_next()
    assert store.get(job.id).state == JobState.cancelled


def test_a_lost_lease_stops_the_run_and_the_new_claim_wins(tmp_path):
    store = open_store(tmp_path, lease_seconds=0.3)
    job = store.submit("generate", {})

    def superseded(claims: list[Claim]) -> None:
        store.recover(worker=claims[0].job.worker)  # as if it had looked dead
        (newer,) = store.claim("other", 1)
        assert claims[0].cancel.wait(5) and claims[0].lost  # told by its next heartbeat
        claims[0].finish(JobState.done, result={"from": "old"})  # dropped: not its job any more
        store.finish(newer.id, newer.token, JobState.done, {"from": "new"})

    Worker(store, {"generate": superseded}).run_next()
    assert store.get(job.id).result == {"from": "new"}


def test_a_running_worker_requeues_a_dead_workers_job(tmp_path):
    store = open_store(tmp_path, lease_seconds=0.3)
    job = store.submit("generate", {})
    store.claim("dead", 1)  # and never heard from again
    ran = threading.Event()
    worker = Worker(store, {"generate": lambda claims: (claims[0].finish(JobState.done), ran.set())},
                    poll_seconds=0.05)
    worker.start()
    try:
        assert ran.wait(10)
    finally:
        worker.stop()
    assert store.get(job.id).state == JobState.done and store.get(job.id).token == 2
