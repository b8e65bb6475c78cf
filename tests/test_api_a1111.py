"""AUTOMATIC1111's ``/sdapi/v1`` on a real server, driven by the unchanged ``webuiapi`` client
(what A1111 users already run), plus raw HTTP for the refusals a client library hides."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image

from dreamloom.generate.request import GenerationRequest
from conftest import live_server

SIZE = {"width": 64, "height": 64}
LONG = 80  # steps of a job that stays running long enough (~0.1 s a step) to be watched and stopped


@pytest.fixture(scope="module")
def url(tmp_path_factory, models_dir) -> Iterator[str]:
    """One server for the module: every test but the auth one shares its loaded model."""
    with live_server(tmp_path_factory.mktemp("a1111"), models_dir) as base:
        yield base


def client(base: str, **auth) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(baseurl=base + "/sdapi/v1", sampler="Euler a", steps=6, **auth)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def poll(read: Callable[[], dict], until: Callable[[dict], bool], timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while not until(value := read()):
        assert time.monotonic() < deadline, f"gave up waiting; last: {value}"
        time.sleep(0.05)
    return value


class Background:
    """A blocking client call in a thread, so the test can watch and stop it meanwhile."""

    def __init__(self, call: Callable[[], webuiapi.WebUIApiResult]):
        self.result: webuiapi.WebUIApiResult | None = None
        self.thread = threading.Thread(target=lambda: setattr(self, "result", call()), daemon=True)
        self.thread.start()

    def join(self) -> webuiapi.WebUIApiResult:
        self.thread.join(60)
        assert self.result is not None, "the call did not return"
        return self.result


def test_txt2img_draws_what_the_engine_draws(url, engine):
    api = client(url)
    result = api.txt2img(prompt="a red circle", negative_prompt="blur", seed=1234, batch_size=2, cfg_scale=5, **SIZE)

    assert result.info["all_seeds"] == [1234, 1235] and result.info["seed"] == 1234
    assert result.info["sampler_name"] == "Euler a" and result.info["steps"] == 6
    assert result.info["sd_model_name"] == "dreamloom-tiny-sd" and len(result.info["sd_model_hash"]) == 10
    assert (result.info["width"], result.info["height"]) == (64, 64) and result.info["interrupted"] is False
    assert result.parameters["prompt"] == "a red circle" and result.parameters["hr_scale"] == 2  # echoed, unused
    expected = engine.generate(GenerationRequest(prompt="a red circle", negative_prompt="blur", sampler="Euler a",
                                                 steps=6, cfg_scale=5, seed=1234, batch_size=2, **SIZE)).images
    assert len(result.images) == 2
    for got, want in zip(result.images, expected):
        assert np.abs(pixels(got) - pixels(want)).max() <= 2
    assert result.images[0].info["parameters"] == result.info["infotexts"][0]

    # png-info reads the infotext back, parsed as A1111 parses it
    info = api.png_info(result.images[1])
    assert info.info == result.info["infotexts"][1]
    assert info.parameters["Seed"] == "1235" and info.parameters["Size-1"] == "64"
    assert info.parameters["Prompt"] == "a red circle" and info.parameters["Negative prompt"] == "blur"


def test_img2img_mask_redraws_only_the_masked_part(url):
    api = client(url)
    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    init = Image.fromarray(np.stack([np.tile(ramp, (64, 1)), np.tile(ramp[:, None], (1, 64)),
                                     np.full((64, 64), 90, np.uint8)], axis=-1))
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    inside = np.zeros((64, 64), bool)
    inside[6:58, 6:58] = True  # the square, widened past the reach of its blurred edge

    result = api.img2img(images=[init], mask_image=Image.fromarray(mask), mask_blur=2, denoising_strength=0.9,
                         prompt="a blue square", seed=7, **SIZE)
    drawn = pixels(result.images[0])
    assert np.array_equal(drawn[~inside], pixels(init)[~inside])
    assert np.abs(drawn[16:48, 16:48] - pixels(init)[16:48, 16:48]).max() > 10
    assert result.info["denoising_strength"] == 0.9 and result.parameters["init_images"] is None

    inverted = api.img2img(images=[init], mask_image=Image.fromarray(mask), mask_blur=2, inpainting_mask_invert=1,
                           denoising_strength=0.9, prompt="a blue square", seed=7, **SIZE)
    assert np.array_equal(pixels(inverted.images[0])[26:38, 26:38], pixels(init)[26:38, 26:38])
    assert np.abs(pixels(inverted.images[0])[:6] - pixels(init)[:6]).max() > 10


def test_progress_preview_and_interrupt(url):
    api = client(url)
    call = Background(lambda: api.txt2img(prompt="a long one", steps=LONG, seed=3, **SIZE))
    running = poll(api.get_progress, lambda p: p["progress"] > 0 and p["current_image"] is not None)
    assert 0 < running["progress"] < 1 and running["eta_relative"] > 0
    assert running["state"]["job_count"] == 1 and running["state"]["sampling_steps"] == LONG
    assert 0 < running["state"]["sampling_step"] < LONG
    assert Image.open(io.BytesIO(base64.b64decode(running["current_image"]))).size == (64, 64)

    assert api.interrupt() == {}
    result = call.join()  # the call still answers, with the image drawn so far
    assert len(result.images) == 1 and result.info["interrupted"] is True
    job = requests.get(url + "/api/v1/jobs", params={"limit": 1}).json()["jobs"][0]
    assert job["request"]["origin"] == "a1111" and job["progress"]["step"] < LONG  # it stopped early

    idle = api.get_progress()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None


def test_options_switch_the_model(url):
    api = client(url)
    models = {m["model_name"]: m for m in api.get_sd_models()}
    assert {"dreamloom-tiny-sd", "random-sd"} <= set(models)
    tiny, other = models["dreamloom-tiny-sd"], models["random-sd"]
    assert other["title"] == f"random-sd [{other['hash']}]" and len(other["hash"]) == 10
    assert api.get_options()["sd_model_checkpoint"] == tiny["title"]

    api.set_options({"sd_model_checkpoint": other["title"]})
    try:
        assert api.util_get_current_model() == other["title"]
        drawn = api.txt2img(prompt="x", seed=1, **SIZE)
        assert drawn.info["sd_model_name"] == "random-sd" and drawn.info["sd_model_hash"] == other["hash"]
        tiny_once = {"sd_model_checkpoint": "dreamloom-tiny-sd"}
        override = api.txt2img(prompt="x", seed=1, override_settings=tiny_once, **SIZE)
        assert override.info["sd_model_name"] == "dreamloom-tiny-sd"
    finally:
        api.set_options({"sd_model_checkpoint": "dreamloom-tiny-sd"})
    assert api.get_options()["sd_model_checkpoint"] == tiny["title"]

    refused = requests.post(url + "/sdapi/v1/options", json={"sd_model_checkpoint": "nope [0123456789]"})
    assert refused.status_code == 422 and "random-sd" in refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "sd_model_checkpoint"]


def test_listings(url):
    api = client(url)
    assert {"Euler a", "DPM++ 2M", "DPM++ 2M Karras"} <= {s["name"] for s in api.get_samplers()}
    assert {"automatic", "karras"} <= {s["name"] for s in api.get_schedulers()}
    assert {"None", "Lanczos", "Nearest"} <= {u["name"] for u in api.get_upscalers()}
    assert api.get_loras() == []  # the test models folder has no Lora/ folder
    assert api.get_scripts() == {"txt2img": [], "img2img": []}
    assert api.get_cmd_flags()["api"] is True and api.get_cmd_flags()["api_auth"] is False
    assert api.get_memory()["ram"]["total"] > 0
    assert api.refresh_checkpoints() is None


def test_sampler_and_scheduler_names(url):
    joined = client(url).txt2img(prompt="x", sampler_name="DPM++ 2M", scheduler="karras", steps=4, seed=2, **SIZE)
    assert joined.info["sampler_name"] == "DPM++ 2M Karras"
    # older clients name the sampler in sampler_index only
    body = {"prompt": "x", "sampler_index": "DPM++ 2M Karras", "steps": 4, "seed": 2, **SIZE}
    legacy = requests.post(url + "/sdapi/v1/txt2img", json=body).json()
    assert json.loads(legacy["info"])["sampler_name"] == "DPM++ 2M Karras"
    legacy_image = Image.open(io.BytesIO(base64.b64decode(legacy["images"][0])))
    assert np.array_equal(pixels(joined.images[0]), pixels(legacy_image))


@pytest.mark.parametrize("body, status, loc, text", [
    ({"sampler_name": "Nope"}, 422, ["body", "sampler_name"], "Euler a"),
    ({"sampler_name": "Euler a", "scheduler": "karras"}, 422, ["body", "scheduler"], "DPM++ 2M"),
    ({"scheduler": "exponential"}, 422, ["body", "scheduler"], "karras"),
    ({"width": 4096}, 422, ["body", "width"], "limit"),
    ({"width": 65}, 422, ["body", "width"], "multiple of 8"),
    ({"steps": "many"}, 422, ["body", "steps"], ""),
    ({"seed": 2**40}, 422, ["body", "seed"], ""),
    ({"override_settings": {"sd_model_checkpoint": "nope"}}, 422, ["body", "override_settings", "sd_model_checkpoint"],
     "random-sd"),
    ({"override_settings": {"CLIP_stop_at_last_layers": 40}}, 422,
     ["body", "override_settings", "CLIP_stop_at_last_layers"], ""),
])
def test_txt2img_refusals_name_the_field(url, body, status, loc, text):
    response = requests.post(url + "/sdapi/v1/txt2img", json={"prompt": "x", "steps": 4, **SIZE, **body})
    assert response.status_code == status
    assert response.json()["detail"][0]["loc"] == loc and text in response.text


def test_other_refusals(url):
    api = url + "/sdapi/v1"
    undecodable = requests.post(api + "/img2img", json={"prompt": "x", "init_images": ["bm90IGFuIGltYWdl"], **SIZE})
    assert undecodable.status_code == 422 and undecodable.json()["detail"][0]["loc"] == ["body", "init_images"]
    missing = requests.post(api + "/img2img", json={"prompt": "x", **SIZE})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "init_images"]
    bad_png = requests.post(api + "/png-info", json={"image": "data:image/png;base64,AAAA"})
    assert bad_png.status_code == 422 and bad_png.json()["detail"][0]["loc"] == ["body", "image"]
    interrogate = requests.post(api + "/interrogate", json={"image": "", "model": "clip"})
    assert interrogate.status_code == 422 and interrogate.json()["detail"][0]["loc"] == ["body", "image"]


def test_auth_and_owners_stop_only_their_own_jobs(tmp_path, models_dir):
    with live_server(tmp_path / "auth", models_dir, users={"a": "pa", "b": "pb"}) as base:
        assert requests.get(base + "/sdapi/v1/options").status_code == 401
        assert requests.get(base + "/sdapi/v1/options", auth=("a", "wrong")).status_code == 401
        a, b = client(base, username="a", password="pa"), client(base, username="b", password="pb")

        call = Background(lambda: a.txt2img(prompt="a's job", steps=LONG, seed=5, **SIZE))
        seen = poll(a.get_progress, lambda p: p["state"]["sampling_step"] > 0)["state"]["sampling_step"]
        others = b.get_progress()
        assert others["progress"] == 0 and others["state"]["job_count"] == 0 and others["current_image"] is None
        assert b.interrupt() == {} and b.skip() == {}
        later = poll(a.get_progress, lambda p: p["state"]["sampling_step"] > seen + 3)  # a's job runs on
        assert not later["state"]["interrupted"] and not later["state"]["skipped"]

        a.interrupt()
        result = call.join()
        assert result.info["interrupted"] is True and len(result.images) == 1
