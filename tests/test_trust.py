"""The boundaries between principals on a real server (127.0.0.1): whose jobs, files and
progress a caller sees and stops, who changes server-wide settings, which names a request
may reach, and that no endpoint taking an image decodes a decompression bomb."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator

import numpy as np
import pytest
import requests
from conftest import live_server
from PIL import Image

from dreamloom.service.principals import key_id

BOB = {"Authorization": "Bearer k-bob"}
EVE = {"Authorization": "Bearer k-eve"}
OPERATOR = ("op", "op-pw")
ANN = ("ann", "ann-pw")
QUICK = {"prompt": "a small red circle on a blue background", "steps": 2, "sampler": "Euler"}


@pytest.fixture(scope="module")
def url(tmp_path_factory, models_dir) -> Iterator[str]:
    with live_server(tmp_path_factory.mktemp("trust"), models_dir, api_keys=["k-bob", "k-eve"],
                     users=dict([OPERATOR, ANN]), operators=["op"]) as base:
        yield base


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def finished(url: str, job_id: str, headers: dict, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (job := requests.get(f"{url}/api/v1/jobs/{job_id}", headers=headers).json())["state"] in ("queued",
                                                                                                    "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


def test_another_principals_job_is_invisible_and_unstoppable(url):
    job = requests.post(f"{url}/api/v1/jobs", json=QUICK, headers=BOB).json()
    done = finished(url, job["id"], BOB)
    assert done["state"] == "done"
    name = done["result"]["files"][0]
    base = f"{url}/api/v1/jobs/{job['id']}"
    for who in ({"headers": EVE}, {"auth": ANN}):
        assert requests.get(base, **who).status_code == 404
        assert requests.get(f"{base}/files/{name}", **who).status_code == 404
        assert requests.get(f"{base}/preview", **who).status_code == 404
        assert requests.get(f"{base}/events", **who).status_code == 404
        assert requests.post(f"{base}/interrupt", **who).status_code == 404
        assert requests.post(f"{base}/skip", **who).status_code == 404
        assert requests.delete(base, **who).status_code == 404
        listed = requests.get(f"{url}/api/v1/jobs", **who).json()
        assert job["id"] not in [j["id"] for j in listed["jobs"]]
    assert requests.get(f"{base}/files/{name}", headers=BOB).status_code == 200


def test_a1111_progress_and_interrupt_stay_with_their_caller(url):
    long = requests.post(f"{url}/api/v1/jobs", json={**QUICK, "steps": 150, "n_iter": 3}, headers=BOB).json()
    deadline = time.monotonic() + 60
    while requests.get(f"{url}/api/v1/jobs/{long['id']}", headers=BOB).json()["progress"]["step"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert requests.get(f"{url}/sdapi/v1/progress", headers=EVE).json()["state"]["job"] == ""
    assert requests.get(f"{url}/sdapi/v1/progress", headers=BOB).json()["state"]["job"] == long["id"]
    assert requests.post(f"{url}/sdapi/v1/interrupt", headers=EVE).status_code == 200
    assert requests.post(f"{url}/sdapi/v1/skip", headers=EVE).status_code == 200
    time.sleep(0.5)
    job = requests.get(f"{url}/api/v1/jobs/{long['id']}", headers=BOB).json()
    assert job["state"] == "running" and job["progress"]["step"] > 2
    requests.delete(f"{url}/api/v1/jobs/{long['id']}", headers=BOB)
    assert finished(url, long["id"], BOB)["state"] == "cancelled"


def test_options_change_the_server_only_for_the_operator(url):
    def options(**who) -> dict:
        return requests.get(f"{url}/sdapi/v1/options", **who).json()

    before = options(headers=BOB)
    assert before["sd_model_checkpoint"].startswith("dreamloom-tiny-sd")
    junk = {f"junk_{i}": "x" * 1000 for i in range(100)}
    changed = requests.post(f"{url}/sdapi/v1/options", headers=EVE,
                            json={"sd_model_checkpoint": "random-sd", "CLIP_stop_at_last_layers": 2, **junk})
    assert changed.status_code == 200
    mine = options(headers=EVE)
    assert mine["sd_model_checkpoint"].startswith("random-sd") and mine["CLIP_stop_at_last_layers"] == 2
    assert options(headers=BOB) == before  # eve's choice is eve's alone
    for who, model in ((EVE, "random-sd"), (BOB, "dreamloom-tiny-sd")):  # a job naming no model gets the caller's
        job = requests.post(f"{url}/api/v1/jobs", json={"prompt": "a red star", "steps": 1}, headers=who).json()
        assert job["request"]["model"] == model and job["request"]["clip_skip"] == (2 if who is EVE else 1)
    assert not any(key.startswith("junk") for key in mine) and len(requests.get(
        f"{url}/sdapi/v1/options", headers=EVE).content) < 1000
    refused = requests.post(f"{url}/sdapi/v1/options", headers=EVE, json={"CLIP_stop_at_last_layers": 13})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][-1] == "CLIP_stop_at_last_layers"
    assert requests.post(f"{url}/sdapi/v1/options", auth=OPERATOR,
                         json={"sd_model_checkpoint": "random-sd"}).status_code == 200
    try:
        assert options(headers=BOB)["sd_model_checkpoint"].startswith("random-sd")  # the operator's is everyone's
    finally:
        requests.post(f"{url}/sdapi/v1/options", auth=OPERATOR, json={"sd_model_checkpoint": "dreamloom-tiny-sd"})


def test_names_never_reach_a_path_or_the_model_hub(url):
    subject = png_b64(Image.new("RGB", (64, 64), "red"))
    train = {"name": "hub-star", "base_model": "org/name", "instance_prompt": "a sks star", "images": [subject],
             "steps": 2, "prior_preservation": False}
    refused = requests.post(f"{url}/api/v1/train", json=train, headers=BOB)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "base_model"]
    for model in ("org/name", "../random-sd", "/etc/passwd"):
        job = requests.post(f"{url}/api/v1/jobs", json={**QUICK, "model": model}, headers=BOB)
        assert job.status_code == 422 and job.json()["detail"][0]["loc"] == ["body", "model"], model


def test_an_omitted_a1111_size_is_the_models_native_size(url):
    answer = requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "a red star", "steps": 2}, headers=BOB)
    assert answer.status_code == 200, answer.text
    image = Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0])))
    assert image.size == (64, 64)


def bomb() -> str:
    """A real 6000x6000 PNG of 37 kB: 36 MP once decoded, over the server's pixel cap."""
    return png_b64(Image.new("L", (6000, 6000)))


def _image_requests(data: str) -> list[tuple[str, str, dict]]:
    chat = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What colour is it?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + data}}]}]}
    return [
        ("/api/v1/jobs", "init_image", {**QUICK, "init_image": data}),
        ("/api/v1/jobs", "mask", {**QUICK, "init_image": png_b64(Image.new("RGB", (64, 64))), "mask": data}),
        ("/api/v1/train", "images", {"name": "bomb", "instance_prompt": "a sks star", "images": [data]}),
        ("/sdapi/v1/img2img", "init_images", {"prompt": "x", "init_images": [data]}),
        ("/sdapi/v1/png-info", "image", {"image": data}),
        ("/sdapi/v1/interrogate", "image", {"image": data}),
        ("/sdapi/v1/vqa", "image", {"image": data}),
        ("/sdapi/v1/caption", "image", {"image": data, "backend": "vlm"}),
        ("/v1/chat/completions", "messages", chat),
    ]


def test_a_decompression_bomb_is_a_4xx_naming_the_field_everywhere(url):
    data = bomb()
    for path, field, body in _image_requests(data):
        answer = requests.post(url + path, json=body, headers=BOB)
        assert answer.status_code == 422, (path, answer.status_code, answer.text[:300])
        assert field in answer.text and "limit" in answer.text, (path, answer.text[:300])
    edit = requests.post(f"{url}/v1/images/edits", headers=BOB, data={"prompt": "x"},
                         files={"image": ("bomb.png", base64.b64decode(data), "image/png")})
    assert edit.status_code == 422 and "image" in edit.text and "limit" in edit.text, edit.text[:300]


def test_skip_ends_an_img2img_jobs_current_batch_only(url):
    init = png_b64(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    request = {**QUICK, "init_image": init, "steps": 100, "n_iter": 2, "seed": 5, "denoising_strength": 1.0}
    plain = finished(url, requests.post(f"{url}/api/v1/jobs", json=request, headers=BOB).json()["id"], BOB)
    job = requests.post(f"{url}/api/v1/jobs", json=request, headers=BOB).json()
    deadline = time.monotonic() + 60
    while requests.get(f"{url}/api/v1/jobs/{job['id']}", headers=BOB).json()["progress"]["step"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert requests.post(f"{url}/api/v1/jobs/{job['id']}/skip", headers=BOB).status_code == 200
    skipped = finished(url, job["id"], BOB)
    assert skipped["state"] == "done" and len(skipped["result"]["files"]) == 2

    def image(done: dict, i: int) -> np.ndarray:
        raw = requests.get(done["result"]["urls"][i], headers=BOB).content
        return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.int16)

    assert np.abs(image(skipped, 0) - image(plain, 0)).mean() > 2  # batch 1 was cut short
    assert np.abs(image(skipped, 1) - image(plain, 1)).max() <= 2  # batch 2 ran in full


def test_an_api_key_is_its_own_principal(url):
    assert key_id("k-bob") != key_id("k-eve")
    job = requests.post(f"{url}/api/v1/jobs", json=QUICK, headers=BOB).json()
    assert requests.get(f"{url}/api/v1/jobs/{job['id']}", headers=EVE).status_code == 404
    assert requests.get(f"{url}/api/v1/jobs/{job['id']}", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_one_principal_cannot_fill_the_queue_for_everyone(tmp_path, models_dir):
    with live_server(tmp_path, models_dir, api_keys=["k-bob", "k-eve"], ui=False,
                     limits={"max_queue_per_principal": 2}) as base:
        slow = {**QUICK, "steps": 150, "n_iter": 4}
        jobs = [requests.post(f"{base}/api/v1/jobs", json=slow, headers=BOB) for _ in range(2)]
        assert [job.status_code for job in jobs] == [202, 202]
        refused = requests.post(f"{base}/api/v1/jobs", json=slow, headers=BOB)
        assert refused.status_code == 429 and "limit per user" in refused.text
        assert requests.post(f"{base}/api/v1/jobs", json=QUICK, headers=EVE).status_code == 202
        for job in jobs:
            requests.delete(f"{base}/api/v1/jobs/{job.json()['id']}", headers=BOB)
