"""DreamBooth as a job: queued over the job API, trained by the server's worker, installed
into the models folder (and usable at once), cancelled, and refused with a 422 naming the
field when the request is wrong."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import httpx
import pytest
from conftest import live_server

from dreamloom.config import Settings
from dreamloom.jobs import open_store
from dreamloom.jobs.model import JobState
from dreamloom.jobs.training import TrainingRunner, destination, submit_training
from dreamloom.jobs.worker import Worker
from dreamloom.shapeworld import render, sample_scenes
from dreamloom.train.dreambooth.request import TrainingRequest


def subject(count: int = 3) -> list:
    return [render(scene) for scene in sample_scenes(seed=17, count=count)]


def b64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def wait_done(client: httpx.Client, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/api/v1/jobs/{job_id}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return job


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("train-server")
    with live_server(data, data / "models", ui=False) as url:
        yield url, data


def test_a_training_job_installs_a_lora_that_generates_at_once(server):
    url, data = server
    body = {"name": "api-star", "instance_prompt": "a sks star", "prior_preservation": False, "steps": 4,
            "images": [b64(image) for image in subject()]}
    with httpx.Client(base_url=url, timeout=60) as client:
        accepted = client.post("/api/v1/train", json=body)
        assert accepted.status_code == 202, accepted.text
        job = wait_done(client, accepted.json()["id"])
        assert job["state"] == "done", job["error"]
        assert job["kind"] == "train" and job["progress"]["step"] == job["progress"]["total"] == 4
        assert job["result"]["installed"] == "api-star"
        assert (data / "models" / "Lora" / "api-star" / "pytorch_lora_weights.safetensors").exists()
        assert any(j["id"] == job["id"] for j in client.get("/api/v1/jobs").json()["jobs"])
        assert "api-star" in [lora["name"] for lora in client.get("/sdapi/v1/loras").json()]
        generated = client.post("/api/v1/jobs", json={"prompt": "a sks star <lora:api-star:1>", "steps": 4})
        assert wait_done(client, generated.json()["id"])["state"] == "done"

        again = client.post("/api/v1/train", json=body)  # the name is taken now
        assert again.status_code == 422 and again.json()["detail"][0]["loc"] == ["body", "name"]


def test_a_name_in_training_is_taken_at_submission(server):
    url, _ = server
    body = {"name": "twice", "instance_prompt": "a sks star", "prior_preservation": False, "steps": 500,
            "images": [b64(subject(1)[0])]}
    first = httpx.post(f"{url}/api/v1/train", json=body, timeout=30)
    assert first.status_code == 202, first.text
    try:
        second = httpx.post(f"{url}/api/v1/train", json=body, timeout=30)
        assert second.status_code == 422 and second.json()["detail"][0]["loc"] == ["body", "name"], second.text
        assert "being trained" in second.text
    finally:
        httpx.delete(f"{url}/api/v1/jobs/{first.json()['id']}", timeout=30)


@pytest.mark.parametrize(("change", "field"), [
    ({"images": ["bm90IGFuIGltYWdl"]}, ["body", "images", 0]),
    ({"images": []}, ["body", "images"]),
    ({"prior_preservation": True, "class_prompt": ""}, ["body", "request"]),
    ({"prior_preservation": True, "class_prompt": "a circle"}, ["body", "request"]),
    ({"base_model": "no-such-model"}, ["body", "base_model"]),
    ({"name": "../escape"}, ["body", "name"]),
    ({"steps": 0}, ["body", "steps"]),
])
def test_a_wrong_training_request_is_a_422_naming_the_field(server, change, field):
    url, _ = server
    body = {"name": "never", "instance_prompt": "a sks star", "prior_preservation": False, "steps": 4,
            "images": [b64(subject(1)[0])], **change}
    response = httpx.post(f"{url}/api/v1/train", json=body, timeout=30)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == field


def test_cancel_stops_a_running_training_job_and_installs_nothing(tmp_path):
    settings = Settings(models_dir=tmp_path / "models", device="cpu")
    store = open_store(tmp_path)
    request = TrainingRequest(name="stopped", instance_prompt="a sks star", prior_preservation=False, steps=500)
    job = submit_training(store, settings, request, subject(2))
    assert store.blobs.inputs(job.id) == ["instance-00", "instance-01"]
    worker = Worker(store, {"train": TrainingRunner(settings, store).run}, poll_seconds=0.1)
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while (store.get(job.id).step or 0) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        store.request_cancel(job.id)
        while not store.get(job.id).state.finished:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        worker.stop()
    stopped = store.get(job.id)
    assert stopped.state == JobState.cancelled and stopped.step < 500
    assert not destination(settings, request).exists()


def test_the_request_becomes_the_recipe_config(tmp_path):
    lora = TrainingRequest(name="x", instance_prompt="a sks star", class_prompt="a star", steps=100)
    cfg = lora.to_config(tmp_path / "in", tmp_path / "out")
    assert cfg.lora.enabled and cfg.lora.name == "x" and cfg.learning_rate == 1e-4 and cfg.with_prior_preservation
    assert cfg.validation.prompts == ["a sks star"] and cfg.validation.every == 25 and cfg.max_steps == 100
    full = TrainingRequest(name="y", instance_prompt="a sks star", method="full", prior_preservation=False,
                           learning_rate=2e-6)
    cfg = full.to_config(tmp_path / "in", tmp_path / "out", base_model=str(tmp_path / "base"))
    assert not cfg.lora.enabled and cfg.learning_rate == 2e-6 and cfg.base_model == str(tmp_path / "base")
    assert destination(Settings(models_dir=tmp_path), full) == tmp_path / "y"
    assert destination(Settings(models_dir=tmp_path), lora) == Path(tmp_path) / "Lora" / "x"
