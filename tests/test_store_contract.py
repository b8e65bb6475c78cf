"""The job-store contract, written against ``JobStore`` only and run on every implementation:
append a factory to ``STORES`` (a Redis store, say) and it must pass all of this unchanged.

A factory takes a data dir and the store's options; two calls with the same data dir must
reach the same jobs (a restart, or another process)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from PIL import Image

from dreamloom.jobs import open_store
from dreamloom.jobs.model import JobState
from dreamloom.jobs.store import JobStore, LeaseLost, QueueFull

Factory = Callable[..., JobStore]

STORES: list = [pytest.param(open_store, id="sqlite")]


@pytest.fixture(params=STORES)
def make(request, tmp_path) -> Callable[..., JobStore]:
    """Opens the store of the test's data dir (again, for a restart), with the given options."""
    factory: Factory = request.param
    return lambda **options: factory(tmp_path / "data", **options)


@pytest.fixture
def store(make) -> JobStore:
    return make()


def running(store: JobStore, **submit):
    store.submit("generate", {}, **submit)
    (job,) = store.claim("w", 1)
    return job


# -- submit, read, claim -----------------------------------------------------------------------

def test_submit_get_list_and_counts(store):
    a = store.submit("generate", {"prompt": "a"}, owner="ann")
    b = store.submit("train", {"prompt": "b"}, owner="bob")
    assert store.get(a.id).request == {"prompt": "a"} and store.get(a.id).state == JobState.queued
    assert store.get("0" * 32) is None
    assert [j.id for j in store.jobs()] == [b.id, a.id]  # newest first
    assert [j.id for j in store.jobs(owner="ann")] == [a.id]
    store.claim("w", 1)
    assert [j.id for j in store.jobs(state=JobState.running)] == [a.id]
    assert store.counts() == {"running": 1, "queued": 1}
    assert store.counts(owner="ann") == {"running": 1} and store.counts(owner="eve") == {}


def test_a_full_queue_refuses_and_keeps_nothing(store):
    store.submit("generate", {}, max_queued=2)
    store.submit("generate", {}, max_queued=2)
    with pytest.raises(QueueFull, match="limit 2"):
        store.submit("generate", {}, max_queued=2, inputs={"init_image": Image.new("RGB", (8, 8))})
    assert store.counts() == {"queued": 2}


def test_one_owner_cannot_fill_the_queue_for_everyone(store):
    for _ in range(2):
        store.submit("generate", {}, owner="ann", max_queued=10, max_owner_queued=2)
    with pytest.raises(QueueFull, match="you have 2 jobs"):
        store.submit("generate", {}, owner="ann", max_queued=10, max_owner_queued=2)
    store.submit("generate", {}, owner="bob", max_queued=10, max_owner_queued=2)  # others still get in
    store.claim("w", 1)
    with pytest.raises(QueueFull):  # running jobs count too
        store.submit("generate", {}, owner="ann", max_queued=10, max_owner_queued=2)
    assert store.counts(owner="ann") == {"running": 1, "queued": 1}


def test_claim_takes_oldest_and_groups_a_batch_key_within_max_images(store):
    a = store.submit("generate", {"n": 0}, batch_key="k1", images=2)
    b = store.submit("generate", {"n": 1}, batch_key="k2", images=1)
    c = store.submit("generate", {"n": 2}, batch_key="k1", images=2)
    d = store.submit("generate", {"n": 3}, batch_key="k1", images=2)
    claimed = store.claim("w", max_images=4)
    assert [j.id for j in claimed] == [a.id, c.id]  # d would exceed 4 images; b has another key
    assert all(j.state == JobState.running and j.worker == "w" and j.token == 1 for j in claimed)
    assert all(j.lease_until > time.time() + store.lease_seconds / 2 for j in claimed)
    assert [j.id for j in store.claim("w", max_images=4)] == [b.id]
    assert [j.id for j in store.claim("w", max_images=4)] == [d.id]
    assert store.claim("w", max_images=4) == []


def test_jobs_without_a_batch_key_run_alone_and_a_key_grows_a_group(store):
    first = store.submit("generate", {}, batch_key=None)
    store.submit("generate", {}, batch_key=None)
    keyed = store.submit("generate", {}, batch_key="k")
    assert [j.id for j in store.claim("w", max_images=8)] == [first.id]
    assert [j.id for j in store.claim("w", max_images=8, batch_key="k")] == [keyed.id]
    assert store.claim("w", max_images=8, batch_key="k") == []


def test_two_workers_never_claim_the_same_job(make):
    stores = [make(), make()]  # two connections to the same data, as two processes have
    jobs = [stores[0].submit("generate", {"i": i}) for i in range(30)]
    claimed: list[str] = []
    lock = threading.Lock()

    def take(store: JobStore) -> None:
        while batch := store.claim(threading.current_thread().name, 1):
            with lock:
                claimed.extend(j.id for j in batch)

    threads = [threading.Thread(target=take, args=(s,), name=f"w{i}") for i, s in enumerate(stores * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(j.id for j in jobs)


# -- leases and fencing ------------------------------------------------------------------------

def test_an_expired_lease_is_recovered_and_claimed_again_with_a_new_token(make):
    store = make(lease_seconds=0.2)
    first = running(store)
    assert store.recover() == []  # the lease still holds
    time.sleep(0.3)
    assert store.recover() == [first.id]
    requeued = store.get(first.id)
    assert requeued.state == JobState.queued and requeued.step == 0 and requeued.worker is None
    (second,) = store.claim("w2", 1)
    assert second.id == first.id and second.token > first.token and second.worker == "w2"


def test_a_stale_token_changes_nothing_and_the_newer_worker_wins(make):
    store = make(lease_seconds=0.2)
    old = running(store)
    store.progress(old.id, old.token, 1, 4)
    time.sleep(0.3)
    store.recover()
    (new,) = store.claim("w2", 1)
    with pytest.raises(LeaseLost):
        store.progress(old.id, old.token, 3, 4)
    with pytest.raises(LeaseLost):
        store.heartbeat(old.id, old.token)
    with pytest.raises(LeaseLost):
        store.finish(old.id, old.token, JobState.done, {"files": ["old.png"]})
    assert store.get(new.id).step == 0 and store.get(new.id).state == JobState.running
    store.finish(new.id, new.token, JobState.done, {"files": ["new.png"]})
    with pytest.raises(LeaseLost):
        store.finish(old.id, old.token, JobState.failed, error="late")
    done = store.get(new.id)
    assert done.state == JobState.done and done.result == {"files": ["new.png"]} and done.error is None


def test_a_finished_or_recovered_job_refuses_its_old_claim(make):
    store = make(lease_seconds=0.2)
    job = running(store)
    time.sleep(0.3)
    store.recover()  # queued again, not yet claimed: the old token is still refused
    with pytest.raises(LeaseLost):
        store.finish(job.id, job.token, JobState.done)
    assert store.get(job.id).state == JobState.queued


def test_a_heartbeat_extends_the_lease(make):
    store = make(lease_seconds=0.6)
    job = running(store)
    for _ in range(3):
        time.sleep(0.3)
        beat = store.heartbeat(job.id, job.token)
        assert beat.lease_until > time.time() + 0.4
    assert store.recover() == [] and store.get(job.id).state == JobState.running
    store.progress(job.id, job.token, 1, 2)  # a progress write extends it too
    time.sleep(0.3)
    assert store.recover() == []


def test_recover_with_a_dead_workers_name_takes_its_jobs_at_once(store):
    mine = running(store)
    store.submit("generate", {})
    store.claim("other", 1)
    assert store.recover(worker="w") == [mine.id]  # the other worker's lease still holds
    assert store.get(mine.id).state == JobState.queued


def test_finish_needs_a_final_state(store):
    job = running(store)
    with pytest.raises(ValueError, match="not a final state"):
        store.finish(job.id, job.token, JobState.running)


# -- requests from front ends ------------------------------------------------------------------

def test_cancel_ends_a_queued_job_at_once_and_asks_a_running_one(make):
    store = make(lease_seconds=0.2)
    queued = store.submit("generate", {})
    assert store.request_cancel(queued.id).state == JobState.cancelled
    job = running(store)
    asked = store.request_cancel(job.id)
    assert asked.state == JobState.running and asked.cancel_requested
    assert store.heartbeat(job.id, job.token).cancel_requested  # the worker learns it on its heartbeat
    time.sleep(0.3)
    assert store.recover() == [job.id]
    assert store.get(job.id).state == JobState.cancelled  # a cancelled job is not run again
    assert store.request_cancel("0" * 32) is None


def test_interrupt_skip_and_clear_skip(store):
    job = running(store)
    assert store.request_interrupt(job.id, skip=True).skip_requested
    assert store.progress(job.id, job.token, 1, 4).skip_requested
    store.clear_skip(job.id, job.token)
    assert not store.get(job.id).skip_requested
    assert store.request_interrupt(job.id).interrupt_requested
    queued = store.submit("generate", {})
    assert not store.request_interrupt(queued.id).interrupt_requested  # only a running job is interrupted


def test_progress_keeps_step_total_and_preview(store):
    job = running(store)
    store.progress(job.id, job.token, 2, 8, b"png")
    store.progress(job.id, job.token, 3, 8)
    now = store.get(job.id)
    assert (now.step, now.total, store.preview(job.id)) == (3, 8, b"png")
    store.finish(job.id, job.token, JobState.done)
    assert store.preview(job.id) is None and store.get(job.id).progress == 1.0


# -- notification ------------------------------------------------------------------------------

def _later(delay: float, *calls: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        for call in calls:
            time.sleep(delay)
            call()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_subscriber_is_woken_by_progress_and_finish_from_another_thread(store):
    job = running(store)

    async def follow() -> list[float]:
        woken = []
        with store.subscribe(job.id) as subscription:
            thread = _later(0.05, lambda: store.progress(job.id, job.token, 1, 2),
                            lambda: store.finish(job.id, job.token, JobState.done))
            for _ in range(2):
                start = time.monotonic()
                assert await subscription.changed(timeout=10)
                woken.append(time.monotonic() - start)
            thread.join()
        return woken

    assert max(asyncio.run(follow())) < 1.0


def test_every_change_notifies_and_a_thread_can_wait_too(store):
    job = store.submit("generate", {})
    changes = [lambda: store.claim("w", 1), lambda: store.request_interrupt(job.id, skip=True),
               lambda: store.clear_skip(job.id, 1), lambda: store.request_cancel(job.id)]
    with store.subscribe(job.id) as subscription:
        for change in changes:
            assert not subscription.wait(0)
            change()
            assert subscription.wait(0)


def test_watch_follows_a_job_until_it_is_finished(store):
    job = running(store)

    async def follow() -> list[JobState]:
        thread = _later(0.05, lambda: store.progress(job.id, job.token, 1, 2),
                        lambda: store.finish(job.id, job.token, JobState.done))
        seen = [j async for j in store.watch(job.id)]
        thread.join()
        return seen

    seen = asyncio.run(follow())
    assert seen[0].state == JobState.running and seen[-1].state == JobState.done
    assert asyncio.run(store.wait(job.id)).state == JobState.done


def test_a_change_through_another_store_on_the_same_data_is_seen(make):
    store, other = make(recheck_seconds=0.2), make()
    job = running(store)

    async def follow() -> JobState:
        _later(0.05, lambda: other.finish(job.id, job.token, JobState.done))
        return (await asyncio.wait_for(store.wait(job.id), timeout=5)).state

    assert asyncio.run(follow()) == JobState.done


# -- files -------------------------------------------------------------------------------------

def test_outputs_by_bare_name_only(store):
    job = store.submit("generate", {})
    store.blobs.put_output(job.id, "00000-1.png", b"png")
    assert store.blobs.get_output(job.id, "00000-1.png") == b"png"
    assert store.blobs.output_path(job.id, "00000-1.png").read_bytes() == b"png"
    assert store.blobs.output_path(job.id, "00000-1.png").is_relative_to(store.blobs.local_root)
    for name in ("../x", "/etc/passwd", ".hidden", "a/b.png", "..", ""):
        with pytest.raises(ValueError):
            store.blobs.put_output(job.id, name, b"no")
        assert store.blobs.get_output(job.id, name) is None and store.blobs.output_path(job.id, name) is None
    assert store.blobs.get_output(job.id, "missing.png") is None
    with pytest.raises(ValueError, match="not a job id"):
        store.blobs.get_output("../etc", "passwd")


def test_inputs_round_trip_and_remove_forgets_everything(store):
    image = Image.new("RGB", (8, 8), (200, 10, 10))
    job = store.submit("generate", {}, inputs={"init_image": image, "mask": Image.new("L", (8, 8), 255)})
    assert store.blobs.inputs(job.id) == ["init_image", "mask"]
    assert store.blobs.load_input(job.id, "init_image").getpixel((3, 3)) == (200, 10, 10)
    assert store.blobs.load_input(job.id, "nothing") is None
    with pytest.raises(ValueError):
        store.blobs.save_input(job.id, "../up", image)
    work = store.blobs.work_dir(job.id)
    (work / "checkpoint").write_text("step 3")
    assert work.is_dir() and store.blobs.work_dir(job.id) == work
    store.blobs.put_output(job.id, "a.png", b"png")
    store.blobs.remove(job.id)
    assert store.blobs.inputs(job.id) == [] and store.blobs.get_output(job.id, "a.png") is None


def test_everything_survives_reopening_the_store(make):
    store = make()
    job = running(store, owner="ann", inputs={"init_image": Image.new("RGB", (4, 4))})
    store.progress(job.id, job.token, 1, 2)
    queued = store.submit("generate", {"n": 1}, batch_key="k")
    store.blobs.put_output(job.id, "x.png", b"png")
    reopened = make()
    again = reopened.get(job.id)
    assert (again.state, again.owner, again.step, again.token) == (JobState.running, "ann", 1, job.token)
    reopened.finish(job.id, job.token, JobState.done)  # the claim outlives the restart of the store
    assert reopened.blobs.get_output(job.id, "x.png") == b"png"
    assert reopened.blobs.inputs(job.id) == ["init_image"]
    assert [j.id for j in reopened.claim("w", 4)] == [queued.id]
