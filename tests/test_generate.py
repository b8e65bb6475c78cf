"""The engine on a tiny random pipeline: seeds, batches, samplers, img2img, inpaint, progress, cancel."""

import threading

import numpy as np
import pytest
from PIL import Image

from dreamloom.generate.progress import GenerationCancelled
from dreamloom.generate.request import GenerationRequest
from dreamloom.generate.samplers import SAMPLERS


def _request(**kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red circle", "model": "random-sd", "steps": 4, "seed": 10, **kw})


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_txt2img_native_size_and_infotext(engine):
    result = engine.generate(_request(negative_prompt="blue", cfg_scale=5))
    assert result.images[0].size == (64, 64) and result.seeds == [10]
    assert "Negative prompt: blue" in result.infotexts[0] and "Seed: 10" in result.infotexts[0]


def test_same_seed_same_image_and_other_seed_other_image(engine):
    a, b = engine.generate(_request()).images[0], engine.generate(_request()).images[0]
    c = engine.generate(_request(seed=11)).images[0]
    assert np.array_equal(_pixels(a), _pixels(b))
    assert np.abs(_pixels(a) - _pixels(c)).mean() > 1


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M Karras"])
def test_image_reproducible_alone_regardless_of_batch(engine, sampler):
    batch = engine.generate(_request(sampler=sampler, batch_size=3, n_iter=2))
    assert batch.seeds == [10, 11, 12, 13, 14, 15]
    alone = engine.generate(_request(sampler=sampler, seed=14)).images[0]
    assert np.abs(_pixels(batch.images[4]) - _pixels(alone)).max() <= 2


def test_random_seed_is_recorded(engine):
    result = engine.generate(_request(seed=-1))
    again = engine.generate(_request(seed=result.seeds[0])).images[0]
    assert np.array_equal(_pixels(result.images[0]), _pixels(again))


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_generates(engine, sampler):
    image = engine.generate(_request(sampler=sampler, steps=3)).images[0]
    assert image.size == (64, 64) and np.asarray(image).std() > 0


def test_size_clip_skip_and_attention_change_output(engine):
    assert engine.generate(_request(width=96, height=64)).images[0].size == (96, 64)
    base = _pixels(engine.generate(_request()).images[0])
    assert np.abs(base - _pixels(engine.generate(_request(clip_skip=2)).images[0])).mean() > 0.1
    assert np.abs(base - _pixels(engine.generate(_request(prompt="a (red:1.5) circle")).images[0])).mean() > 0.1


def test_long_prompts_are_split_into_windows(engine):
    long_prompt = " ".join(["red circle"] * 40)
    assert engine.generate(_request(prompt=long_prompt)).images[0].size == (64, 64)


def test_img2img_strength_decides_how_much_the_seed_matters(engine):
    init = Image.new("RGB", (64, 64), (30, 80, 230))

    def seed_spread(strength: float) -> float:
        a, b = (engine.generate(_request(init_image=init, denoising_strength=strength, steps=10, seed=s)).images[0] for s in (1, 2))
        return float(np.abs(_pixels(a) - _pixels(b)).mean())

    assert seed_spread(0.2) < seed_spread(1.0)


def test_inpaint_keeps_every_pixel_outside_the_mask(engine):
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    result = engine.generate(_request(init_image=init, mask=mask, mask_blur=2, denoising_strength=1.0, steps=6)).images[0]
    keep = np.ones((64, 64), bool)
    keep[16 - 6 : 48 + 6, 16 - 6 : 48 + 6] = False  # the mask grown by the blur's reach
    assert np.array_equal(_pixels(result)[keep], _pixels(init)[keep])
    assert np.abs(_pixels(result)[24:40, 24:40] - _pixels(init)[24:40, 24:40]).mean() > 5


def test_progress_reports_every_step_and_previews(engine):
    reports = []
    engine.generate(_request(steps=4, n_iter=2), progress=reports.append, preview_every=2)
    assert [(r.batch, r.step) for r in reports] == [(b, s) for b in range(2) for s in range(1, 5)]
    assert all(r.total == 4 for r in reports)
    assert reports[1].preview is not None and reports[1].preview[0].size == (64, 64)


def test_cancel_stops_generation(engine):
    cancel = threading.Event()

    def progress(report):
        if report.step == 2:
            cancel.set()

    with pytest.raises(GenerationCancelled):
        engine.generate(_request(steps=10), progress=progress, cancel=cancel)


def test_request_names_resolve_only_inside_the_models_folder(engine, tmp_path):
    outside = tmp_path / "evil"
    outside.mkdir()
    for name in ["../evil", str(outside), "/etc/passwd", "random-sd/../../evil"]:
        with pytest.raises(ValueError, match="not found"):
            engine.generate(_request(model=name))


def test_saved_png_carries_infotext(engine, tmp_path):
    from dreamloom.generate.infotext import read_infotext, request_from_infotext

    result = engine.generate(_request(batch_size=2))
    paths = engine.save(result, tmp_path)
    assert len(paths) == 2 and paths[0] != paths[1]
    back = request_from_infotext(read_infotext(paths[1]))
    assert back.seed == 11 and back.prompt == "a red circle" and back.model == "random-sd"
    again = engine.generate(back.model_copy(update={"batch_size": 1}))
    assert np.abs(_pixels(again.images[0]) - _pixels(Image.open(paths[1]).convert("RGB"))).max() <= 2


def test_inpainting_unet_runs_the_inpainting_pipeline_and_keeps_the_outside(engine, models_dir):
    from diffusers import UNet2DConditionModel

    from conftest import random_pipeline

    pipeline = random_pipeline(seed=1)
    pipeline.unet = UNet2DConditionModel.from_config({**pipeline.unet.config, "in_channels": 9})
    pipeline.save_pretrained(models_dir / "random-inpaint", safe_serialization=True)
    rng = np.random.default_rng(1)
    init = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (8, 8, 40, 40))
    request = _request(model="random-inpaint", init_image=init, mask=mask, mask_blur=0, denoising_strength=1.0)
    first, again = engine.generate(request).images[0], engine.generate(request).images[0]
    keep = np.ones((64, 64), bool)
    keep[8:40, 8:40] = False
    assert np.array_equal(_pixels(first)[keep], _pixels(init)[keep])
    assert np.abs(_pixels(first)[12:36, 12:36] - _pixels(init)[12:36, 12:36]).mean() > 5
    assert np.array_equal(_pixels(first), _pixels(again))  # seeded: the same request redraws the same image


def test_interrupt_keeps_the_images_drawn_so_far(engine):
    """AUTOMATIC1111's interrupt: img2img stops at step 2 and returns its current images, and
    the second batch never starts."""
    init = engine.generate(_request(steps=2)).images[0]
    interrupt = threading.Event()
    steps: list[tuple[int, int]] = []

    def progress(p):
        steps.append((p.batch, p.step))
        if p.step == 2:
            interrupt.set()

    request = _request(init_image=init, denoising_strength=1.0, steps=6, n_iter=2)
    result = engine.generate(request, progress=progress, interrupt=interrupt)
    full = engine.generate(request.model_copy(update={"n_iter": 1}))
    assert result.extra["interrupted"] and len(result.images) == 1 and result.seeds == [10]
    assert steps == [(0, 1), (0, 2)]
    assert np.abs(_pixels(result.images[0]) - _pixels(full.images[0])).mean() > 1
