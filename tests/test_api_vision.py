"""The vision model served: OpenAI's chat completions (official client, streaming, errors),
SD.Next's vqa/caption, A1111's interrogate, the models listing, and dreamloom's remote
backend talking to a real dreamloom server over HTTP on 127.0.0.1 (retries against a tiny
server that answers 429 once, a wrong key, a closed port)."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
import torch
from conftest import live_server
from PIL import Image
from test_vision import RED, SHIPPED, write_random_vlm
from typer.testing import CliRunner

from dreamloom.config import Settings
from dreamloom.generate.infotext import parse_infotext
from dreamloom.vision.backends import GenerationOptions, VisionError
from dreamloom.vision.messages import parse_messages
from dreamloom.vision.remote import RemoteBackend
from dreamloom.vision.service import VisionConfig, open_backend

torch.set_num_threads(1)
MODEL = "random-vlm"


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + b64(image)


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm-models")
    write_random_vlm(root / MODEL)
    return root


@pytest.fixture(scope="module")
def url(tmp_path_factory, vlm_dir):
    with live_server(tmp_path_factory.mktemp("vision-server"), vlm_dir) as base:
        yield base


@pytest.fixture(scope="module")
def local(vlm_dir):
    return open_backend(VisionConfig(model=MODEL), Settings(models_dir=vlm_dir, device="cpu"))


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_remote_backend_round_trip_equals_the_local_model(url, local):
    remote = RemoteBackend(url + "/v1", MODEL, api_key="unused", options=GenerationOptions(max_new_tokens=8))
    options = GenerationOptions(max_new_tokens=8)
    question = [{"role": "user", "content": [{"type": "image", "image": RED},
                                             {"type": "text", "text": "What colour is the background?"}]}]
    expected = local.chat(question, options=options)
    assert expected and remote.chat(question) == expected  # the image crossed HTTP as a data: URL, pixels intact
    stream = remote.chat(question, stream=True)
    assert "".join(stream).strip() == expected
    assert stream.completion.prompt_tokens > 16 and 1 <= stream.completion.completion_tokens <= 8
    assert remote.caption(RED) == local.complete(parse_messages([{"role": "user", "content": [
        {"type": "image", "image": RED}, {"type": "text", "text": "Describe the image."}]}]), options).text


def test_official_client_with_an_image_and_streaming(client):
    messages = [{"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": [{"type": "text", "text": "What colour is the background?"},
                                             {"type": "image_url", "image_url": {"url": data_url(RED)}}]}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4, temperature=0)
    assert reply.object == "chat.completion" and reply.model == MODEL
    assert isinstance(reply.choices[0].message.content, str) and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 4 and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=4, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].usage == reply.usage
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and text.strip() == reply.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.choices[0].finish_reason


def test_chat_refusals_name_the_field(client, url):
    remote_image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]
    with pytest.raises(openai.UnprocessableEntityError, match="does not fetch images") as refused:
        client.chat.completions.create(model=MODEL, messages=remote_image)
    assert refused.value.param == "messages.0.content.0.image_url.url"
    with pytest.raises(openai.NotFoundError, match="vision model 'gpt-4o' not found; available: .*random-vlm"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.UnprocessableEntityError, match="not an image"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}}]}])
    too_long = httpx.post(url + "/v1/chat/completions", json={"model": MODEL, "max_tokens": 10**6,
                                                              "messages": [{"role": "user", "content": "hi"}]})
    assert too_long.status_code == 422 and too_long.json()["error"]["param"] == "max_tokens"


def test_models_list_the_vision_model(client):
    ids = [model.id for model in client.models.list()]
    assert MODEL in ids and "dreamloom-tiny-sd" in ids
    assert client.models.retrieve(MODEL).id == MODEL


def test_interrogate_caption_and_vqa_shapes(url):
    api = url + "/sdapi/v1"
    interrogate = httpx.post(api + "/interrogate", json={"image": b64(RED), "model": MODEL}, timeout=60).json()
    assert set(interrogate) == {"caption"} and isinstance(interrogate["caption"], str)
    vqa = httpx.post(api + "/vqa", json={"image": data_url(RED), "model": MODEL, "question": "Use Prompt",
                                         "prompt": "What colour is the background?", "max_tokens": 4}, timeout=60)
    assert vqa.status_code == 200 and set(vqa.json()) == {"answer", "annotated_image"}
    caption = httpx.post(api + "/caption", json={"backend": "vlm", "image": b64(RED), "model": MODEL,
                                                 "question": "Short Caption"}, timeout=60).json()
    assert caption["backend"] == "vlm" and caption["answer"] == interrogate["caption"] and caption["caption"] is None
    openclip = httpx.post(api + "/caption", json={"image": b64(RED), "model": "ViT-L-14/openai"}, timeout=60)
    if SHIPPED:  # a CLIP interrogator's name gets the default vision model's caption
        assert openclip.status_code == 200 and openclip.json()["backend"] == "openclip" and openclip.json()["caption"]
    else:
        assert openclip.status_code == 422 and "dreamloom-tiny-vlm" in openclip.text
    tagger = httpx.post(api + "/caption", json={"backend": "tagger", "image": b64(RED)})
    assert tagger.status_code == 422 and tagger.json()["detail"][0]["loc"] == ["body", "backend"]
    missing = httpx.post(api + "/vqa", json={"model": MODEL, "question": "Use Prompt"})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "prompt"]
    no_image = httpx.post(api + "/vqa", json={"model": MODEL})
    assert no_image.status_code == 422 and no_image.json()["detail"][0]["loc"] == ["body", "image"]
    assert httpx.get(api + "/vqa/models").json()[0]["name"] in (MODEL, "dreamloom-tiny-vlm")


class _Flaky(BaseHTTPRequestHandler):
    """Answers the first chat request with 429 (Retry-After: 0), the next with a completion."""

    calls: list[str] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(body["messages"][0]["content"][0]["image_url"]["url"][:22])
        if len(self.calls) == 1:
            payload, status, headers = b'{"error": {"message": "slow down"}}', 429, {"Retry-After": "0"}
        else:
            answer = {"choices": [{"message": {"role": "assistant", "content": "a red square"}, "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 40, "completion_tokens": 3}}
            payload, status, headers = json.dumps(answer).encode(), 200, {}
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_remote_retries_a_rate_limit_then_answers():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = RemoteBackend(f"http://127.0.0.1:{server.server_port}/v1", "meta-llama/llama-4-maverick",
                               api_key="k", backoff=0.01)
        big = Image.new("RGB", (3000, 1500), (220, 30, 30))
        assert remote.ask(big, "What is it?") == "a red square"
        assert _Flaky.calls == ["data:image/png;base64,"] * 2
    finally:
        server.shutdown()
        server.server_close()


def test_remote_wrong_key_and_closed_port_are_one_clear_line(tmp_path, vlm_dir):
    with live_server(tmp_path / "locked", vlm_dir, api_keys=["secret"]) as base:
        wrong = RemoteBackend(base + "/v1", MODEL, api_key="wrong", max_retries=0)
        with pytest.raises(VisionError, match=r"authentication failed at .*/v1/chat/completions \(HTTP 401\): invalid API key"):
            wrong.caption(RED)
        assert isinstance(RemoteBackend(base + "/v1", MODEL, api_key="secret").caption(RED), str)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = RemoteBackend(f"http://127.0.0.1:{port}/v1", MODEL, api_key="k", max_retries=1, backoff=0.01)
    with pytest.raises(VisionError, match=rf"cannot reach http://127.0.0.1:{port}/v1/chat/completions: ConnectError"):
        closed.caption(RED)


def test_ask_through_the_command_line_remote_backend(url, tmp_path):
    from dreamloom.cli.main import app

    RED.save(tmp_path / "red.png")
    run = CliRunner().invoke(app, ["ask", str(tmp_path / "red.png"), "What colour is the background?", "--backend",
                                   "remote", "--base-url", url + "/v1", "--model", MODEL, "--max-new-tokens", "3"])
    assert run.exit_code == 0, run.output
    closed = CliRunner().invoke(app, ["ask", str(tmp_path / "red.png"), "What?", "--backend", "remote",
                                      "--base-url", "http://127.0.0.1:9/v1", "--timeout", "2"])
    assert closed.exit_code == 2 and "cannot reach http://127.0.0.1:9/v1" in closed.output.replace("\n", "")


def test_generate_enhances_through_a_remote_endpoint(url, tmp_path):
    from dreamloom.cli.main import app

    run = CliRunner().invoke(app, ["generate", "a red circle", "--enhance", "--enhance-base-url", url + "/v1",
                                   "--enhance-model", MODEL, "--steps", "2", "--output-dir", str(tmp_path),
                                   "--device", "cpu"])
    assert run.exit_code == 0, run.output
    (path,) = tmp_path.glob("*.png")
    fields = parse_infotext(Image.open(path).info["parameters"])
    assert fields["Enhanced from"] == "a red circle"
    remote = RemoteBackend(url + "/v1", MODEL, options=VisionConfig().options)
    assert fields["Prompt"] == remote.enhance("a red circle")  # the endpoint's answer, not the embedded model's
