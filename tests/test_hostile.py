"""Hostile input on a real server: whatever a client sends, it gets a 4xx naming the field, never
a 500, and the server goes on serving the next request. (More of these belong here as the
request policy tightens; the trust boundaries are in test_trust.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from conftest import live_server

from dreamloom.generate.request import GenerationRequest
from dreamloom.text import valid_unicode

NAN_BODY = '{"prompt": "a red star", "cfg_scale": NaN}'
SURROGATE = '{"prompt": "a \\ud800 star"}'


@pytest.fixture(scope="module")
def url(tmp_path_factory, models_dir) -> Iterator[str]:
    with live_server(tmp_path_factory.mktemp("hostile"), models_dir, ui=False) as base:
        yield base


@pytest.mark.parametrize("path, body, field", [
    ("/api/v1/jobs", NAN_BODY, "cfg_scale"),
    ("/api/v1/jobs", '{"prompt": "x", "steps": Infinity}', "steps"),
    ("/api/v1/jobs", SURROGATE, "prompt"),
    ("/api/v1/jobs", '{"prompt": "x", "negative_prompt": "\\udfff"}', "negative_prompt"),
    ("/api/v1/jobs", '{"prompt": "x", "model": "\\ud800"}', "model"),
    ("/sdapi/v1/txt2img", '{"prompt": "x", "cfg_scale": NaN}', "cfg_scale"),
    ("/sdapi/v1/txt2img", SURROGATE, "prompt"),
    ("/api/v1/train", '{"name": "x", "instance_prompt": "a \\ud800", "images": ["AAAA"]}', "instance_prompt"),
])
def test_non_finite_numbers_and_invalid_unicode_are_a_422_naming_the_field(url, path, body, field):
    answer = requests.post(url + path, data=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, (answer.status_code, answer.text[:300])
    assert field in [part for problem in answer.json()["detail"] for part in problem["loc"]], answer.text[:300]
    assert requests.get(url + "/api/v1/jobs").status_code == 200  # nothing stored that breaks a listing


def test_a_clip_skip_deeper_than_the_text_encoder_is_refused_at_submission(url):
    answer = requests.post(url + "/api/v1/jobs", json={"prompt": "x", "model": "random-sd", "clip_skip": 3})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "clip_skip"], answer.text
    assert "2 layers" in answer.text
    assert requests.post(url + "/api/v1/jobs", json={"prompt": "x", "model": "random-sd", "clip_skip": 2,
                                                     "steps": 1}).status_code == 202


def test_the_server_serves_the_next_request(url):
    job = requests.post(url + "/api/v1/jobs", json={"prompt": "a red star", "steps": 1, "model": "random-sd"})
    assert job.status_code == 202, job.text


def test_valid_unicode_is_kept_and_a_lone_surrogate_named():
    assert GenerationRequest(prompt="zoë draws a ★ 🌟").prompt == "zoë draws a ★ 🌟"
    with pytest.raises(ValueError, match="character 2 is a lone surrogate"):
        valid_unicode("a \ud800 b")


def test_the_engine_names_a_clip_skip_too_deep_for_a_model_without_a_config(engine):
    with pytest.raises(ValueError, match="clip_skip 3 is deeper than the text encoder \\(2 layers\\)"):
        engine.generate(GenerationRequest(prompt="x", model="random-sd", steps=1, clip_skip=3))


@pytest.mark.parametrize("steps, strength", [(1, 0.75), (1, 0.0), (20, 0.0), (20, 0.01), (49, 1 / 49)])
@pytest.mark.parametrize("masked", [False, True])
def test_img2img_below_one_step_runs_one_step(engine, steps, strength, masked):
    from PIL import Image

    image = Image.new("RGB", (64, 64), (200, 40, 40))
    mask = Image.new("L", (64, 64), 255) if masked else None
    seen = []
    result = engine.generate(GenerationRequest(prompt="x", model="random-sd", steps=steps, denoising_strength=strength,
                                               init_image=image, mask=mask), progress=seen.append)
    assert len(result.images) == 1 and seen and seen[-1].total >= 1


def _encoded(image, fmt: str) -> str:
    import base64
    import io

    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize("mode, fmt", [("CMYK", "JPEG"), ("F", "TIFF"), ("I;16", "TIFF"), ("P", "PNG"),
                                       ("LA", "PNG"), ("1", "PNG")])
def test_any_image_mode_pil_reads_is_converted_not_a_500(url, mode, fmt):
    import time

    from PIL import Image

    init = _encoded(Image.new(mode, (64, 64)), fmt)
    body = {"prompt": "x", "model": "random-sd", "steps": 1, "init_image": init, "mask": init}
    job = requests.post(url + "/api/v1/jobs", json=body)
    assert job.status_code == 202, job.text[:300]
    deadline = time.monotonic() + 60
    while (state := requests.get(f"{url}/api/v1/jobs/{job.json()['id']}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert state["state"] == "done", state["error"]


def test_listings_and_errors_show_names_not_server_paths(url, models_dir):
    models = requests.get(url + "/sdapi/v1/sd-models").json()
    assert {m["filename"] for m in models} >= {"random-sd", "dreamloom-tiny-sd"}
    unknown = requests.post(url + "/api/v1/jobs", json={"prompt": "x <lora:nope:1>"})
    assert unknown.status_code == 422 and str(models_dir) not in unknown.text and "Lora/" in unknown.text
    nope = requests.post(url + "/api/v1/jobs", json={"prompt": "x", "model": "nope"})
    assert nope.status_code == 422 and str(models_dir) not in nope.text


def test_pickle_weights_are_not_listed_and_refused_at_submission(tmp_path, models_dir):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(models_dir / "random-sd", models / "random-sd")
    (models / "old.ckpt").write_bytes(b"never unpickled")
    (models / "Lora").mkdir()
    (models / "Lora" / "old-style.pt").write_bytes(b"never unpickled")
    with live_server(tmp_path / "server", models, ui=False) as base:
        listed = {m["model_name"] for m in requests.get(base + "/sdapi/v1/sd-models").json()}
        assert "random-sd" in listed and "old" not in listed
        assert "old.ckpt" not in {m["id"] for m in requests.get(base + "/v1/models").json()["data"]}
        assert requests.get(base + "/sdapi/v1/loras").json() == []
        for body, field in (({"model": "old.ckpt"}, "model"), ({"prompt": "x <lora:old-style:1>"}, "loras")):
            answer = requests.post(base + "/api/v1/jobs", json={"prompt": "x", **body})
            assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", field], answer.text
            assert "--allow-pickle" in answer.text


def test_a_chunked_body_over_the_limit_is_a_413(tmp_path, models_dir):
    with live_server(tmp_path, models_dir, ui=False, limits={"max_body_bytes": 4096}) as base:
        def chunks():
            yield b'{"prompt": "'
            for _ in range(10):
                yield b"x" * 1000
            yield b'"}'

        refused = requests.post(base + "/api/v1/jobs", data=chunks(), headers={"Content-Type": "application/json"})
        assert refused.status_code == 413, refused.text
        small = requests.post(base + "/api/v1/jobs", data=iter([b'{"prompt": "x", ', b'"steps": 1}']),
                              headers={"Content-Type": "application/json"})
        assert small.status_code == 202, small.text


@pytest.mark.parametrize("path, body, field", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 1_000_000}]}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": "a\x00b"}]}]},
     "text"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "nul \x00"}]}, "content"),
    ("/sdapi/v1/vqa", {"image": "", "question": "x" * 1_000_000}, "question"),
    ("/sdapi/v1/vqa", {"image": "", "question": "Use Prompt", "prompt": "y" * 1_000_000}, "prompt"),
])
def test_a_megabyte_of_chat_text_or_a_nul_is_a_422_before_any_model_sees_it(url, path, body, field):
    answer = requests.post(url + path, json=body)
    assert answer.status_code == 422, (answer.status_code, answer.text[:300])
    assert field in answer.text
