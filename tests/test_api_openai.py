"""The OpenAI-compatible API through the official ``openai`` client against a real server: the
client's own requests (auth header, multipart edits, ``extra_body``) are what must work."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image, ImageFilter

from conftest import live_server

KEY = "sekrit"
FAST = {"steps": 4}


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    """One server for the module, embedded models only, requiring an API key."""
    with live_server(tmp_path_factory.mktemp("openai"), api_keys=[KEY]) as base:
        yield base


@pytest.fixture(scope="module")
def client(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def png(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


def test_a_wrong_key_is_an_authentication_error(url):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_models_list_the_registry(client):
    assert "dreamloom-tiny-sd" in [model.id for model in client.models.list()]
    model = client.models.retrieve("dreamloom-tiny-sd")
    assert (model.object, model.owned_by) == ("model", "dreamloom")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_generate_b64_is_a_seeded_batch(client):
    def generate() -> list[np.ndarray]:
        response = client.images.generate(model="dreamloom-tiny-sd", prompt="a red circle", n=2, size="64x64",
                                          response_format="b64_json", quality="hd", style="vivid", user="tester",
                                          extra_body={**FAST, "seed": 5})
        assert isinstance(response.created, int)
        return [pixels(base64.b64decode(image.b64_json)) for image in response.data]

    first = generate()
    assert [image.shape for image in first] == [(64, 64, 3)] * 2
    assert not np.array_equal(first[0], first[1])
    assert all(np.array_equal(a, b) for a, b in zip(first, generate()))


def test_urls_download_with_the_key_and_openai_names_mean_the_default_model(client):
    response = client.images.generate(model="dall-e-3", prompt="a blue square", size="64x64",
                                      response_format="url", background="auto", moderation="low",
                                      output_format="png", extra_body=FAST)
    (image,) = response.data
    assert image.url.startswith("http://127.0.0.1:")
    assert httpx.get(image.url).status_code == 401
    download = httpx.get(image.url, headers={"Authorization": f"Bearer {KEY}"})
    assert download.status_code == 200
    assert pixels(download.content).shape == (64, 64, 3)


def _hole(alpha_outside: int = 255) -> Image.Image:
    """An alpha channel: opaque (or ``alpha_outside``), fully transparent in the centre square."""
    alpha = Image.new("L", (64, 64), alpha_outside)
    alpha.paste(0, (24, 24, 40, 40))
    return alpha


@pytest.mark.parametrize("convention", ["mask alpha", "image alpha", "white mask"])
def test_edit_redraws_only_the_marked_square(client, tmp_path, convention):
    original = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    redraw = _hole().point(lambda a: 255 - a)
    image, mask = original, None
    if convention == "mask alpha":
        mask = Image.merge("RGBA", (*Image.new("RGB", (64, 64)).split(), _hole()))
    elif convention == "image alpha":
        image = Image.merge("RGBA", (*original.split(), _hole()))
    else:
        mask = redraw.convert("RGB")
    files = {"image": open(png(image, tmp_path / "image.png"), "rb")}
    if mask is not None:
        files["mask"] = open(png(mask, tmp_path / "mask.png"), "rb")
    try:
        response = client.images.edit(**files, prompt="a green dot", size="64x64", response_format="b64_json",
                                      extra_body={**FAST, "seed": 1})
    finally:
        for file in files.values():
            file.close()
    edited = pixels(base64.b64decode(response.data[0].b64_json))
    kept = np.asarray(redraw.filter(ImageFilter.GaussianBlur(4))) == 0  # inpaint pastes through the blurred mask
    assert kept.any() and not kept.all()
    assert np.array_equal(edited[kept], np.asarray(original)[kept])
    assert not np.array_equal(edited[24:40, 24:40], np.asarray(original)[24:40, 24:40])


@pytest.mark.parametrize("size", ["65x64", "large", "64"])
def test_a_bad_size_is_a_422_naming_size(client, size):
    with pytest.raises(openai.UnprocessableEntityError, match="size") as error:
        client.images.generate(prompt="x", size=size, extra_body=FAST)
    assert error.value.param == "size"


def test_bad_requests_are_client_errors_naming_the_field(client, tmp_path):
    def refused(field: str, call) -> None:
        with pytest.raises(openai.UnprocessableEntityError) as error:
            call()
        assert error.value.param == field and field in error.value.message

    refused("n", lambda: client.images.generate(prompt="x", n=1000, extra_body=FAST))
    refused("model", lambda: client.images.generate(prompt="x", model="no-such-model", extra_body=FAST))
    refused("steps", lambda: client.images.generate(prompt="x", extra_body={"steps": 0}))
    refused("stream", lambda: client.images.generate(prompt="x", extra_body={"stream": True}))
    not_png = tmp_path / "not.png"
    not_png.write_bytes(b"not an image")
    with open(not_png, "rb") as file:
        refused("image", lambda: client.images.edit(image=file, prompt="x", extra_body=FAST))
