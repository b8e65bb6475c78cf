"""Prompt enhancement in the engine: any request may ask for it (the CLI, the job API, AUTOMATIC1111's
and OpenAI's APIs, the page), the prompt as written is kept in the infotext as "Enhanced from",
and reading that infotext back gives a request that draws the same image without enhancing."""

from __future__ import annotations

import time

import pytest
import requests

from dreamloom.generate.engine import Engine
from dreamloom.generate.enhance import NoEnhancer, enhancement
from dreamloom.generate.hooks import Stage
from dreamloom.generate.infotext import parse_infotext, request_from_infotext
from dreamloom.generate.request import GenerationRequest

REQUEST = {"prompt": "a red star <lora:none-here:0.5>", "model": "random-sd", "steps": 2, "seed": 3}


def test_an_enhanced_request_records_its_original_prompt(engine):
    seen: list[str] = []

    def rewrite(text: str) -> str:
        seen.append(text)
        return "a large red star on a white background"

    local = Engine(engine.settings, engine.models)
    local.hooks.add(Stage.prepare_request, enhancement(rewrite))
    request = GenerationRequest(prompt="a red star", model="random-sd", steps=2, seed=3, enhance=True)
    result = local.generate(request)
    assert seen == ["a red star"]
    fields = parse_infotext(result.infotexts[0])
    assert fields["Prompt"] == "a large red star on a white background"
    assert fields["Enhanced from"] == "a red star"
    again = request_from_infotext(result.infotexts[0])
    assert again.enhanced_from == "a red star" and not again.enhance
    redrawn = local.generate(again)  # an enhanced request is not enhanced again
    assert seen == ["a red star"]
    assert redrawn.infotexts[0] == result.infotexts[0]


def test_lora_tags_are_not_rewritten(engine):
    local = Engine(engine.settings, engine.models)
    hook = enhancement(lambda text: text.upper())
    request = GenerationRequest(prompt="a red star <lora:my-star:0.5>", enhance=True)
    assert hook(request).prompt == "A RED STAR <lora:my-star:0.5>"
    assert hook(GenerationRequest(prompt="x")) is None
    with pytest.raises(NoEnhancer, match="no vision model"):
        local.generate(GenerationRequest(prompt="a red star", model="random-sd", steps=1, enhance=True))


def test_a_job_asks_for_enhancement_through_the_api(server):
    job = requests.post(f"{server}/api/v1/jobs", json={"prompt": "a red star", "steps": 2, "enhance": True}).json()
    deadline = time.monotonic() + 120
    while (job := requests.get(f"{server}/api/v1/jobs/{job['id']}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert job["state"] == "done", job["error"]
    fields = parse_infotext(job["result"]["infotexts"][0])
    assert fields["Enhanced from"] == "a red star"
    assert fields["Prompt"] and fields["Prompt"] != "a red star"
