"""dreamloom's own job API, auth, limits, crash recovery, load and a schema fuzz, all against a
real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import live_server
from PIL import Image

FAST = {"steps": 4, "width": 64, "height": 64}


def _wait(url: str, job_id: str, client: httpx.Client | None = None, timeout: float = 120) -> dict:
    """Follow the job's server-sent events to its final state."""
    client = client or httpx.Client()
    with client.stream("GET", f"{url}/api/v1/jobs/{job_id}/events", timeout=timeout) as response:
        assert response.status_code == 200
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event in ("done", "failed", "cancelled"):
                return json.loads(line.removeprefix("data: "))
    raise AssertionError("the event stream ended before the job did")


def test_job_lifecycle_events_and_download(server):
    response = httpx.post(f"{server}/api/v1/jobs", json={"prompt": "a red circle", "seed": 5, "batch_size": 2, **FAST})
    assert response.status_code == 202 and response.json()["state"] in ("queued", "running")
    job_id = response.json()["id"]
    events = []
    with httpx.stream("GET", f"{server}/api/v1/jobs/{job_id}/events", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
    assert events[-1] == "done" and events.count("progress") >= 2
    job = httpx.get(f"{server}/api/v1/jobs/{job_id}").json()
    assert job["state"] == "done" and job["result"]["seeds"] == [5, 6]
    assert job["progress"] == {"step": 4, "total": 4, "fraction": 1.0, "eta_seconds": None}
    image = Image.open(io.BytesIO(httpx.get(job["result"]["urls"][0]).content))
    assert image.size == (64, 64) and "Seed: 5" in image.info["parameters"]
    assert httpx.get(f"{server}/api/v1/jobs/{job_id}/files/..%2Fjobs.sqlite").status_code == 404
    listed = httpx.get(f"{server}/api/v1/jobs").json()
    assert [j["id"] for j in listed["jobs"]] == [job_id] and listed["counts"] == {"done": 1}


def test_img2img_job_and_bad_images(server):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, format="PNG")
    png = base64.b64encode(buffer.getvalue()).decode()
    job = httpx.post(f"{server}/api/v1/jobs", json={"prompt": "a circle", "init_image": f"data:image/png;base64,{png}",
                                                    "denoising_strength": 0.3, **FAST}).json()
    assert _wait(server, job["id"])["state"] == "done"
    bad = httpx.post(f"{server}/api/v1/jobs", json={"prompt": "a circle", "init_image": "bm90IGFuIGltYWdl"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "init_image"]


def test_cancel_stops_one_job_not_the_others(tmp_path, models_dir):
    with live_server(tmp_path, models_dir, batch_size=8) as url:
        slow = {"prompt": "a blue square", "steps": 20, "width": 64, "height": 64}
        ids = [httpx.post(f"{url}/api/v1/jobs", json={**slow, "seed": s}).json()["id"] for s in (1, 2, 3)]
        while httpx.get(f"{url}/api/v1/jobs/{ids[1]}").json()["progress"]["step"] < 2:
            time.sleep(0.05)
        queued = httpx.post(f"{url}/api/v1/jobs", json={**FAST, "prompt": "x"}).json()["id"]  # other steps: waits
        assert httpx.delete(f"{url}/api/v1/jobs/{queued}").json()["state"] == "cancelled"
        cancelled = httpx.delete(f"{url}/api/v1/jobs/{ids[1]}")
        assert cancelled.status_code == 200
        states = [_wait(url, i)["state"] for i in ids]
        assert states == ["done", "cancelled", "done"]
        assert httpx.delete(f"{url}/api/v1/jobs/nosuchjob").status_code == 404


def test_auth_api_key_and_basic(tmp_path, models_dir):
    with live_server(tmp_path, models_dir, api_keys=["sekrit"], users={"ann": "pw"}) as url:
        assert httpx.get(f"{url}/api/v1/jobs").status_code == 401
        assert httpx.get(f"{url}/api/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{url}/api/v1/jobs", auth=("ann", "nope")).status_code == 401
        assert httpx.get(f"{url}/api/v1/jobs", headers={"Authorization": "Basic !!!"}).status_code == 401
        key = {"Authorization": "Bearer sekrit"}
        job = httpx.post(f"{url}/api/v1/jobs", json={"prompt": "a", **FAST}, headers=key).json()["id"]
        assert httpx.get(f"{url}/api/v1/jobs/{job}", auth=("ann", "pw")).status_code == 404  # not ann's job
        assert httpx.get(f"{url}/api/v1/jobs", auth=("ann", "pw")).json()["jobs"] == []
        assert _wait(url, job, httpx.Client(headers=key))["state"] == "done"


def test_limits_name_the_field(tmp_path, models_dir):
    limits = {"max_width": 128, "max_steps": 10, "max_batch_size": 2, "max_queue": 2, "max_body_bytes": 4096}
    with live_server(tmp_path, models_dir, limits=limits) as url:
        def refused(body: dict) -> tuple[int, object]:
            response = httpx.post(f"{url}/api/v1/jobs", json={"prompt": "a", **FAST, **body})
            return response.status_code, response.json()["detail"]

        status, detail = refused({"width": 256})
        assert status == 422 and detail[0]["loc"] == ["body", "width"] and "limit of 128" in detail[0]["msg"]
        assert refused({"steps": 11})[1][0]["loc"] == ["body", "steps"]
        assert refused({"batch_size": 3})[1][0]["loc"] == ["body", "batch_size"]
        status, detail = refused({"sampler": "Nope"})
        assert status == 422 and "Euler a" in detail[0]["msg"]
        status, detail = refused({"model": "../../etc/passwd"})
        assert status == 422 and "dreamloom-tiny-sd" in detail[0]["msg"]
        assert refused({"prompt": "x" * 5000})[0] == 413
        assert refused({"width": 63})[0] == 422
        assert httpx.post(f"{url}/api/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
                          ).status_code == 422
        statuses = [httpx.post(f"{url}/api/v1/jobs", json={"prompt": "a", "steps": 10, "seed": s}).status_code
                    for s in range(4)]
        assert statuses[:2] == [202, 202] and 429 in statuses


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(data_dir: Path, port: int, models_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "DREAMLOOM_MODELS_DIR": str(models_dir), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "dreamloom", "serve", "--port", str(port), "--data-dir", str(data_dir),
         "--batch-size", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/jobs").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"server did not start: {process.stderr.read().decode()[-2000:]}")


@pytest.mark.slow
def test_kill_9_loses_no_job(tmp_path, models_dir):
    """Jobs queued and running when the server dies by SIGKILL all finish after a restart, the
    running one from the start, with the seeds they were given."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path, port, models_dir)
    try:
        ids = [httpx.post(f"{url}/api/v1/jobs", json={"prompt": "a red star", "steps": 30, "width": 64, "height": 64,
                                                       "seed": -1}).json()["id"] for _ in range(4)]
        seeds = {i: httpx.get(f"{url}/api/v1/jobs/{i}").json()["request"]["seed"] for i in ids}
        while httpx.get(f"{url}/api/v1/jobs/{ids[0]}").json()["progress"]["step"] < 3:
            time.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        server.wait(30)
        server = _start_server(tmp_path, port, models_dir)
        finished = [_wait(url, i) for i in ids]
        assert [j["state"] for j in finished] == ["done"] * 4
        assert [j["result"]["seeds"] for j in finished] == [[seeds[i]] for i in ids]
        for job in finished:
            assert httpx.get(job["result"]["urls"][0]).status_code == 200
    finally:
        server.kill()
        server.wait(30)


@pytest.mark.slow
def test_fifty_concurrent_clients_all_answered(tmp_path, models_dir):
    async def client(http: httpx.AsyncClient, url: str, seed: int) -> dict:
        response = await http.post(f"{url}/api/v1/jobs", json={"prompt": "a small green circle", "seed": seed, **FAST})
        assert response.status_code == 202
        job_id = response.json()["id"]
        async with http.stream("GET", f"{url}/api/v1/jobs/{job_id}/events") as events:
            async for line in events.aiter_lines():
                if line.startswith("data: ") and '"state":"done"' in line.replace(" ", ""):
                    return json.loads(line.removeprefix("data: "))
        raise AssertionError(f"job {job_id} ended without finishing")

    async def run(url: str) -> list[dict]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(limits=limits, timeout=300) as http:
            return await asyncio.gather(*(client(http, url, seed) for seed in range(50)))

    with live_server(tmp_path, models_dir, batch_size=8) as url:
        jobs = asyncio.run(run(url))
        assert sorted(j["result"]["seeds"][0] for j in jobs) == list(range(50))
        assert httpx.get(f"{url}/api/v1/jobs", params={"limit": 1000}).json()["counts"] == {"done": 50}


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(tmp_path, models_dir):
    """Fuzz every operation of the server's own OpenAPI schema: any 5xx fails."""
    limits = {"max_width": 64, "max_height": 64, "max_steps": 3, "max_batch_size": 2, "max_n_iter": 2}
    with live_server(tmp_path, models_dir, limits=limits, batch_size=4) as url:
        result = subprocess.run(
            [str(Path(sys.executable).with_name("st")), "run", f"{url}/openapi.json", "--checks", "not_a_server_error",
             "--max-examples", "8", "--seed", "1", "--max-time", "240", "--request-timeout", "120", "--no-shrink",
             "--suppress-health-check", "all"],
            check=False, capture_output=True, text=True, timeout=600,
        )
    assert result.returncode == 0, result.stdout[-4000:]
