"""ShapeWorld subjects: shipped instance images, the subject detector, and context prompts."""

import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image, ImageFilter

from dreamloom.models.registry import ModelRegistry
from dreamloom.shapeworld import Scene, ShapeObject, parse_prompt, render, sample_scenes
from dreamloom.shapeworld.grammar import ObjectSpec
from dreamloom.shapeworld.subjects import (
    SUBJECTS,
    instance_captions,
    render_context,
    context_checks,
    context_prompts,
    detect_subject,
    get_subject,
    instance_dir,
    instance_images,
    render_subject_scene,
    visible_backgrounds,
)
from dreamloom.shapeworld.vocab import BACKGROUND_COLOURS, OBJECT_COLOURS, SHAPES, SIZES

NAMES = list(SUBJECTS)


def random_scenes(subject, seed, count):
    """The subject at random places, extents (20-36 px) and backgrounds, half of them beside
    a small ordinary object; yields (image, (cx, cy, extent))."""
    rng = random.Random(seed)
    for _ in range(count):
        extent, background = rng.uniform(20, 36), rng.choice(visible_backgrounds(subject))
        lo, hi = extent / 2 + 2, 64 - extent / 2 - 2
        cx, cy = rng.uniform(lo, hi), rng.uniform(lo, hi)
        others = []
        for _ in range(50 if rng.random() < 0.5 else 0):
            ox, oy = rng.uniform(12, 52), rng.uniform(12, 52)
            if max(abs(ox - cx), abs(oy - cy)) >= extent / 2 + 13:
                colour = rng.choice([c for c in OBJECT_COLOURS if c != background])
                others.append(ShapeObject(rng.choice(SHAPES), colour, "small", ox, oy))
                break
        yield render_subject_scene(subject, cx, cy, extent, background, tuple(others)), (cx, cy, extent)


def blur_and_noise(image, rng):
    """What a small generator adds: a mild blur and colour noise (as in test_shapeworld)."""
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(0.7)), dtype=np.float32)
    return np.clip(blurred + rng.normal(0, 8, blurred.shape), 0, 255).astype(np.uint8)


def test_subjects_are_shapeworld_shapes_in_shapeworld_colours():
    assert {"striped-star", "two-tone-ring"} <= set(SUBJECTS)
    assert (SUBJECTS["striped-star"].class_noun, SUBJECTS["two-tone-ring"].class_noun) == ("star", "circle")
    for subject in SUBJECTS.values():
        assert subject.class_noun in SHAPES and set(subject.colours) <= set(OBJECT_COLOURS)
        assert len(visible_backgrounds(subject)) >= 5 and not set(subject.colours) & set(visible_backgrounds(subject))


def test_unknown_subject_names_the_known_ones():
    for lookup in (get_subject, instance_dir):
        with pytest.raises(ValueError, match="striped-star.*two-tone-ring"):
            lookup("striped-circle")


def test_extent_outside_the_allowed_range_is_refused():
    with pytest.raises(ValueError, match="extent"):
        render_subject_scene(SUBJECTS["striped-star"], 32, 32, 40, "white")


@pytest.mark.parametrize("name", NAMES)
def test_shipped_instance_images_are_what_instance_images_renders(name):
    shipped = [np.asarray(Image.open(instance_dir(name) / f"{i:02d}.png").convert("RGB")) for i in range(5)]
    rendered = [np.asarray(image) for image in instance_images(SUBJECTS[name])]
    assert len(rendered) == 5 and all(np.array_equal(a, b) for a, b in zip(shipped, rendered))
    assert len({tuple(image[0, 0]) for image in rendered}) == 5  # five different backgrounds
    captions = [(instance_dir(name) / f"{i:02d}.txt").read_text().strip() for i in range(5)]
    assert captions == instance_captions(SUBJECTS[name])
    for caption, image in zip(captions, rendered):  # each caption names its image's background
        assert caption.startswith(f"a sks {SUBJECTS[name].class_noun} on ")
        assert tuple(image[0, 0]) == BACKGROUND_COLOURS[parse_prompt(caption).background]


@pytest.mark.parametrize("name", NAMES)
def test_detector_finds_the_subject_in_its_instance_images_and_new_scenes(name):
    subject, rng = SUBJECTS[name], np.random.default_rng(0)
    found = [detect_subject(image, subject) for image in instance_images(subject)]
    assert all(d.present for d in found)
    assert len({round(d.extent) for d in found}) >= 3  # the five differ in size too
    clean, noisy = [], []
    for image, (cx, cy, extent) in random_scenes(subject, 1, 30):
        d = detect_subject(image, subject)
        clean.append(d.present and abs(d.cx - cx) < 1 and abs(d.cy - cy) < 1 and abs(d.extent - extent) < 2)
        noisy.append(detect_subject(blur_and_noise(image, rng), subject).present)
    assert np.mean(clean) >= 0.95 and np.mean(noisy) >= 0.95


@pytest.fixture(scope="module")
def vae_round_trip():
    vae = AutoencoderKL.from_pretrained(ModelRegistry(None).resolve("dreamloom-tiny-sd").path / "vae").eval()

    def round_trip(images):
        x = torch.tensor(np.stack([np.asarray(i) for i in images]), dtype=torch.float32).permute(0, 3, 1, 2) / 127.5 - 1
        with torch.no_grad():
            y = vae.decode(vae.encode(x).latent_dist.mode()).sample
        return list(((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())

    return round_trip


@pytest.mark.parametrize("name", NAMES)
def test_the_tiny_models_vae_can_draw_the_subject(name, vae_round_trip):
    """A subject the frozen VAE cannot reproduce could never be learnt by DreamBooth (3-4 px
    stripes, say: the detector finds 2% of them after the round trip); this is the ceiling."""
    subject = SUBJECTS[name]
    images = instance_images(subject) + [image for image, _ in random_scenes(subject, 2, 15)]
    found = [detect_subject(image, subject).present for image in vae_round_trip(images)]
    assert np.mean(found) >= 0.8


def test_detector_ignores_ordinary_shapeworld_scenes():
    scenes = sample_scenes(5, 100)
    seen = {(o.shape, o.colour) for s in scenes for o in s.objects}
    assert {(shape, c) for shape in ("star", "circle", "square") for c in OBJECT_COLOURS} <= seen
    rng = np.random.default_rng(1)
    images = [render(s) for s in scenes]
    images += [blur_and_noise(image, rng) for image in images[:30]]
    for subject in SUBJECTS.values():
        assert np.mean([detect_subject(image, subject).present for image in images]) <= 0.05


@pytest.mark.parametrize("name", NAMES)
def test_detector_ignores_plain_objects_of_the_class_and_other_subjects(name):
    subject = SUBJECTS[name]
    for colour in OBJECT_COLOURS:
        for size in SIZES:
            background = "black" if colour == "yellow" else "white"
            plain = render(Scene((ShapeObject(subject.class_noun, colour, size, 30, 33),), background))
            assert detect_subject(plain, subject).score < 0.2, (colour, size)
    for other in SUBJECTS.values():
        if other is not subject:
            assert not any(detect_subject(image, subject).present for image in instance_images(other))



@pytest.mark.parametrize("name", NAMES)
def test_context_prompts_read_back_as_their_context(name):
    subject = SUBJECTS[name]
    contexts = context_prompts(subject)
    assert 12 <= len(contexts) <= 20 and contexts == context_prompts(subject)
    assert len({c.prompt for c in contexts}) == len(contexts)
    assert {c.relation for c in contexts} >= {"left of", "right of", "above", "below"}
    assert {c.subject_size for c in contexts} >= {"large", "small"}
    assert len({c.background for c in contexts}) >= 5
    for c in contexts:
        assert " sks " in c.prompt and "sks" not in c.class_prompt
        assert c.class_prompt == c.prompt.replace(" sks", "")
        spec = parse_prompt(c.class_prompt)
        assert spec == parse_prompt(c.prompt)  # the parser skips the identifier
        assert spec.objects[0] == ObjectSpec(subject.class_noun, None, c.subject_size)
        assert spec.background == c.background and spec.relation == c.relation
        assert spec.objects[1:] == ((c.neighbour,) if c.neighbour else ())
    assert context_prompts(subject, "zwx")[0].prompt.startswith(f"a zwx {subject.class_noun} on ")


@pytest.mark.parametrize("name", NAMES)
def test_exactly_rendered_context_scenes_pass_every_context_check(name):
    subject = SUBJECTS[name]
    for context in context_prompts(subject):
        image = render_context(subject, context)
        verdicts = context_checks(image, context, subject)
        assert set(verdicts) == set(context.checks) and all(verdicts.values()), (context.prompt, verdicts)
        assert detect_subject(image, subject).present


def test_context_checks_catch_a_wrong_context():
    subject = SUBJECTS["striped-star"]
    contexts = context_prompts(subject)
    beside = next(c for c in contexts if c.relation == "left of")
    elsewhere = next(b for b in visible_backgrounds(subject) if b not in (beside.background, beside.neighbour.colour))
    wrong_background = context_checks(render_context(subject, replace(beside, background=elsewhere)), beside, subject)
    assert wrong_background == {**dict.fromkeys(beside.checks, True), "background": False}
    wrong_side = context_checks(render_context(subject, replace(beside, relation="right of")), beside, subject)
    assert wrong_side == {**dict.fromkeys(beside.checks, True), "relation": False}
    large = next(c for c in contexts if c.subject_size == "large")
    wrong_size = context_checks(render_context(subject, replace(large, subject_size="small")), large, subject)
    assert wrong_size == {"background": True, "subject.size": False}
