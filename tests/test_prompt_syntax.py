"""AUTOMATIC1111 attention syntax, infotext round trips, sampler table."""

import pytest
import torch

from dreamloom.generate.infotext import format_infotext, parse_infotext, request_from_infotext
from dreamloom.generate.prompt_weights import apply_weights, parse_attention
from dreamloom.generate.request import GenerationRequest
from dreamloom.generate.samplers import SAMPLERS, make_scheduler


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a (red:1.3) circle", [("a ", 1.0), ("red", 1.3), (" circle", 1.0)]),
        ("(red) [circle]", [("red", 1.1), (" ", 1.0), ("circle", 1 / 1.1)]),
        ("((red))", [("red", 1.1 * 1.1)]),
        (r"\(red\)", [("(red)", 1.0)]),
        ("(red", [("red", 1.1)]),
        ("", [("", 1.0)]),
    ],
)
def test_parse_attention(text, expected):
    got = parse_attention(text)
    assert [c for c, _ in got] == [c for c, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def test_weighting_keeps_the_mean_and_changes_the_weighted_tokens():
    hidden = torch.randn(1, 5, 8) + 1.0
    weights = torch.tensor([[1.0, 1.5, 1.0, 1.0, 1.0]])
    out = apply_weights(hidden, weights)
    assert out.mean().item() == pytest.approx(hidden.mean().item(), rel=1e-5)
    assert not torch.allclose(out[0, 1], hidden[0, 1])


def test_infotext_round_trip():
    request = GenerationRequest(
        prompt="a (red:1.2) circle, on a blue background", negative_prompt="blurry, green",
        sampler="DPM++ 2M Karras", steps=13, cfg_scale=5.5, seed=42, width=64, height=72, clip_skip=2,
    )
    text = format_infotext(request, 42, 64, 72, "abcdef0123")
    fields = parse_infotext(text)
    assert fields["Model hash"] == "abcdef0123" and fields["Size"] == "64x72"
    back = request_from_infotext(text)
    assert back.model_dump() == request.model_dump()


def test_reads_automatic1111_infotext():
    text = (
        "masterpiece, a cat\nNegative prompt: lowres\n"
        "Steps: 30, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x768, Model hash: 6ce0161689, "
        'Model: v1-5, Lora hashes: "a: 1, b: 2", Version: v1.6.0'
    )
    request = request_from_infotext(text)
    assert (request.prompt, request.negative_prompt, request.sampler) == ("masterpiece, a cat", "lowres", "Euler a")
    assert (request.steps, request.seed, request.width, request.height, request.model) == (30, 123, 512, 768, "v1-5")
    assert parse_infotext(text)["Lora hashes"] == "a: 1, b: 2"


def test_every_sampler_builds_a_fresh_scheduler_keeping_the_model_schedule():
    base = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "prediction_type": "v_prediction"}
    required = {"Euler", "Euler a", "Heun", "LMS", "DPM2", "DPM2 a", "DPM++ 2M", "DPM++ 2M Karras",
                "DPM++ SDE", "DPM++ 2M SDE", "DDIM", "PLMS", "UniPC"}
    assert required <= set(SAMPLERS)
    for name in SAMPLERS:
        a, b = make_scheduler(name, base), make_scheduler(name, base)
        assert a is not b and type(a) is SAMPLERS[name].scheduler
        assert a.config.prediction_type == "v_prediction"
    assert make_scheduler("DPM++ 2M Karras", base).config.use_karras_sigmas
    assert not make_scheduler("DPM++ 2M", {**base, "use_karras_sigmas": True}).config.use_karras_sigmas


@pytest.mark.parametrize("bad", [{"sampler": "Eular"}, {"width": 65}, {"steps": 0}, {"cfg_scale": -1}])
def test_bad_requests_name_the_field(bad):
    with pytest.raises(ValueError) as error:
        GenerationRequest(prompt="x", **bad)
    assert list(bad)[0] in str(error.value)
