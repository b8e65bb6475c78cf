"""ShapeWorld: determinism, captions, and the scorer's accuracy on renders and on noise."""

import numpy as np
import pytest
from PIL import ImageFilter

from dreamloom.shapeworld import Scene, ShapeObject, parse_prompt, render, render_array, sample_scenes, score_image
from dreamloom.shapeworld.vocab import OBJECT_COLOURS, RELATIONS, SHAPES, SIZES


def test_same_seed_same_scenes_and_pixels():
    a, b = sample_scenes(7, 20), sample_scenes(7, 20)
    assert [s.caption() for s in a] == [s.caption() for s in b]
    assert np.array_equal(render_array(a[3]), render_array(b[3]))
    assert [s.caption() for s in sample_scenes(8, 20)] != [s.caption() for s in a]


def test_vocabulary_covers_the_spec():
    assert len(SHAPES) >= 4 and len(OBJECT_COLOURS) >= 6 and len(SIZES) == 2
    assert set(RELATIONS) == {"left of", "right of", "above", "below"}


def test_caption_states_everything():
    scene = Scene(
        (ShapeObject("circle", "red", "small", 16, 32), ShapeObject("square", "blue", "large", 46, 32)), "yellow", "left of"
    )
    assert scene.caption() == "a small red circle left of a large blue square on a yellow background"
    spec = parse_prompt(scene.caption())
    assert spec.relation == "left of" and spec.background == "yellow"
    assert [(o.shape, o.colour, o.size) for o in spec.objects] == [("circle", "red", "small"), ("square", "blue", "large")]


def test_parser_is_lenient_with_missing_words_and_unknown_tokens():
    spec = parse_prompt("a photo of sks star, purple, on an orange background")
    assert [o.shape for o in spec.objects] == ["star"] and spec.background == "orange"
    spec = parse_prompt("A Green Triangle")
    assert spec.objects[0].colour == "green" and spec.objects[0].size is None and spec.background is None


def test_ground_truth_relations_hold_in_every_two_object_scene():
    for scene in sample_scenes(3, 200, n_objects=2):
        assert score_image(render(scene), scene.caption()).relation is True


@pytest.mark.parametrize("n_objects", [1, 2, 3])
def test_scorer_reads_noisy_blurred_renders_at_least_99_percent(n_objects):
    rng = np.random.default_rng(0)
    scenes = sample_scenes(100 + n_objects, 300, n_objects=n_objects)
    correct = 0
    for scene in scenes:
        image = render(scene).filter(ImageFilter.GaussianBlur(0.7))
        noisy = np.clip(np.asarray(image, dtype=np.float32) + rng.normal(0, 8, (64, 64, 3)), 0, 255)
        result = score_image(noisy.astype(np.uint8), scene.caption())
        correct += result.correct and result.count and all(o.size for o in result.objects)
    assert correct / len(scenes) >= 0.99


def test_scorer_gives_noise_images_near_zero():
    rng = np.random.default_rng(1)
    scenes = sample_scenes(5, 100)
    scores = [score_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), s.caption()) for s in scenes]
    assert not any(r.correct for r in scores)
    assert np.mean([r.score for r in scores]) < 0.05


def test_scorer_catches_each_kind_of_mistake():
    truth = Scene((ShapeObject("star", "green", "large", 32, 32),), "white")
    image = render(truth)
    assert score_image(image, truth.caption()).correct
    assert not score_image(image, "a large red star on a white background").objects[0].colour
    assert not score_image(image, "a large green circle on a white background").objects[0].shape
    assert score_image(image, "a small green star on a white background").objects[0].size is False
    assert score_image(image, "a large green star on a blue background").background is False
    swapped = Scene(
        (ShapeObject("circle", "red", "small", 50, 32), ShapeObject("square", "blue", "small", 14, 32)), "white"
    )
    assert score_image(render(swapped), "a red circle left of a blue square on a white background").relation is False


def test_scorer_works_at_other_resolutions():
    scene = sample_scenes(11, 1, n_objects=1)[0]
    big = render(scene).resize((256, 256))
    assert score_image(big, scene.caption()).correct
