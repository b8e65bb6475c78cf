"""One run path: a single request is a batch of one, with skip, and hooks at named stages that
work the same for txt2img, img2img and inpaint, alone and batched."""

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from dreamloom.generate.batched import BatchMember
from dreamloom.generate.engine import Engine
from dreamloom.generate.hooks import SPECS, HookError, Stage, StageHooks
from dreamloom.generate.request import GenerationRequest

MASK_BOX = (16, 16, 48, 48)


def _request(**kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red circle", "model": "random-sd", "steps": 5, "seed": 10, **kw})


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _init() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))


def _mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, MASK_BOX)
    return mask


MODES = {
    "img2img": {"init_image": _init(), "denoising_strength": 1.0},
    "inpaint": {"init_image": _init(), "mask": _mask(), "mask_blur": 0, "denoising_strength": 1.0},
    "dpm-sde": {"sampler": "DPM++ SDE"},
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_skip_cuts_batch_0_short_and_batch_1_runs_fully_when_alone(engine, mode):
    request = _request(n_iter=2, **MODES[mode])
    skip, reports = threading.Event(), []

    def progress(p):
        reports.append(p)
        if (p.batch, p.step) == (0, 2):
            skip.set()

    result = engine.generate(request, progress=progress, skip=skip)
    full = engine.generate(request)
    total = reports[-1].total  # 5 steps; a second-order sampler (DPM++ SDE) reports its 9 model calls
    assert [(p.batch, p.step) for p in reports] == [(0, 1), (0, 2)] + [(1, s) for s in range(1, total + 1)]
    assert result.seeds == full.seeds == [10, 11] and not skip.is_set() and "interrupted" not in result.extra
    region = (slice(MASK_BOX[1], MASK_BOX[3]), slice(MASK_BOX[0], MASK_BOX[2]))
    assert np.abs(_pixels(result.images[0])[region] - _pixels(full.images[0])[region]).mean() > 1
    assert np.abs(_pixels(result.images[1]) - _pixels(full.images[1])).max() <= 2
    if mode == "inpaint":  # the skipped batch is pasted back too: the outside is the original's
        keep = np.ones((64, 64), bool)
        keep[region] = False
        assert np.array_equal(_pixels(result.images[0])[keep], _pixels(request.init_image)[keep])


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_a_request_alone_and_as_a_batch_of_one_draw_the_same(engine, mode):
    request = _request(batch_size=2, **MODES[mode])
    alone = engine.generate(request)
    (member,) = engine.generate_batch([BatchMember(request)])
    assert member.seeds == alone.seeds and member.infotexts == alone.infotexts
    for a, b in zip(alone.images, member.images):
        assert np.array_equal(_pixels(a), _pixels(b))


def test_a_txt2img_request_alone_and_among_others_draws_the_same(engine):
    request = _request(batch_size=2)
    results = engine.generate_batch([BatchMember(_request(prompt="a blue square", seed=3)), BatchMember(request)])
    for a, b in zip(engine.generate(request).images, results[1].images):
        assert np.abs(_pixels(a) - _pixels(b)).max() <= 2


class _Recorder:
    """An ``on_step`` hook that zeroes the latents of "zero" prompts, and a ``post_process``
    hook that paints "paint" prompts' images a flat colour; both record what they were given."""

    def __init__(self):
        self.steps: list[dict] = []
        self.posts: list[dict] = []

    def on_step(self, request, step, total, timestep, latents, seeds, batch):
        self.steps.append({"prompt": request.prompt, "step": step, "total": total, "rows": latents.shape[0],
                           "seeds": seeds, "batch": batch, "timestep": timestep})
        return torch.zeros_like(latents) if "zero" in request.prompt else None

    def post_process(self, request, images, seeds, batch):
        self.posts.append({"prompt": request.prompt, "count": len(images), "seeds": seeds, "batch": batch})
        if "paint" in request.prompt:
            return [Image.new("RGB", image.size, (1, 2, 3)) for image in images]
        return None


def _hooked(engine: Engine) -> tuple[Engine, _Recorder]:
    recorder, hooks = _Recorder(), StageHooks()
    hooks.add(Stage.on_step, recorder.on_step)
    hooks.add(Stage.post_process, recorder.post_process)
    return Engine(engine.settings, engine.models, hooks=hooks), recorder


@pytest.mark.parametrize("mode", ["txt2img", "img2img"])
def test_step_and_post_process_hooks_alone(engine, mode):
    extra = {} if mode == "txt2img" else MODES["img2img"]
    hooked, recorder = _hooked(engine)
    zeroed = hooked.generate(_request(prompt="zero", batch_size=2, n_iter=2, **extra))
    assert [(s["batch"], s["step"], s["total"], s["rows"]) for s in recorder.steps] == [
        (b, s, 5, 2) for b in range(2) for s in range(1, 6)
    ]
    assert [s["seeds"] for s in recorder.steps[::5]] == [[10, 11], [12, 13]]
    assert [(p["batch"], p["count"], p["seeds"]) for p in recorder.posts] == [(0, 2, [10, 11]), (1, 2, [12, 13])]
    # the zeroed latents decode to one image whatever the seed
    assert all(np.array_equal(_pixels(zeroed.images[0]), _pixels(image)) for image in zeroed.images[1:])
    assert not np.array_equal(_pixels(zeroed.images[0]), _pixels(engine.generate(_request(prompt="zero", **extra)).images[0]))
    painted = hooked.generate(_request(prompt="paint", **extra))
    assert _pixels(painted.images[0]).reshape(-1, 3).tolist() == [[1, 2, 3]] * 64 * 64
    plain = _request(**extra)
    assert np.array_equal(_pixels(hooked.generate(plain).images[0]), _pixels(engine.generate(plain).images[0]))


def test_step_and_post_process_hooks_batched(engine):
    hooked, recorder = _hooked(engine)
    requests = [_request(prompt="zero", batch_size=2), _request(prompt="paint", seed=3), _request(seed=20)]
    results = hooked.generate_batch([BatchMember(r) for r in requests])
    per_prompt = {r.prompt: [s for s in recorder.steps if s["prompt"] == r.prompt] for r in requests}
    assert [(s["step"], s["rows"], s["seeds"]) for s in per_prompt["zero"]] == [(s, 2, [10, 11]) for s in range(1, 6)]
    assert [(s["step"], s["rows"], s["seeds"]) for s in per_prompt["paint"]] == [(s, 1, [3]) for s in range(1, 6)]
    assert np.array_equal(_pixels(results[0].images[0]), _pixels(results[0].images[1]))
    assert _pixels(results[1].images[0]).reshape(-1, 3).tolist() == [[1, 2, 3]] * 64 * 64
    assert np.abs(_pixels(results[2].images[0]) - _pixels(engine.generate(requests[2]).images[0])).max() <= 2
    assert sorted((p["prompt"], p["count"]) for p in recorder.posts) == [("a red circle", 1), ("paint", 1), ("zero", 2)]


def test_prepare_request_encode_decode_and_save_hooks(engine, tmp_path):
    hooks = StageHooks()
    hooks.add(Stage.prepare_request, lambda request, mode: request.model_copy(update={"prompt": request.prompt + " on blue"}))
    seen: dict = {}

    @hooks.on(Stage.encode_prompts)
    def encode_prompts(request, embeddings):
        seen["prompt"], seen["keys"] = request.prompt, sorted(embeddings)

    hooks.add(Stage.decode, lambda latents: [Image.new("RGB", (8, 8))] * latents.shape[0])
    hooks.add(Stage.save, lambda infotext, seed: f"{infotext}, Saved seed: {seed}")
    hooked = Engine(engine.settings, engine.models, hooks=hooks)
    result = hooked.generate(_request(init_image=_init()))
    assert seen == {"prompt": "a red circle on blue", "keys": ["negative_prompt_embeds", "prompt_embeds"]}
    assert result.infotexts[0].startswith("a red circle on blue")
    assert result.images[0].size == (8, 8)
    (path,) = hooked.save(result, tmp_path)
    assert Image.open(path).info["parameters"].endswith("Saved seed: 10")


def test_a_hook_must_take_only_its_specs_arguments():
    hooks = StageHooks()
    with pytest.raises(HookError, match="on_step"):
        hooks.add(Stage.on_step, lambda latents, image: None)
    assert all(spec.stage is stage for stage, spec in SPECS.items()) and list(SPECS) == list(Stage)
    assert not hooks
