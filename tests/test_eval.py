"""The adherence measurement itself, with a perfect and a useless "model"."""

from PIL import Image

from dreamloom.eval.adherence import measure_adherence
from dreamloom.eval.prompts import held_out_scenes
from dreamloom.shapeworld import render


def test_exact_renders_score_fully_correct_blank_images_do_not_and_progress_is_reported():
    scenes = {s.caption(): s for n in (1, 2) for s in held_out_scenes(6 if n == 1 else 4, n)}
    calls = []
    report = measure_adherence(lambda prompts, seeds: [render(scenes[p]) for p in prompts], {1: 6, 2: 4},
                               batch_size=4, progress=lambda done, total: calls.append((done, total)))
    assert report["1-object"]["correct"] == 1.0 and report["2-object"]["correct"] == 1.0
    assert report["2-object"]["attributes"]["relation"] == 1.0
    assert calls == [(4, 10), (6, 10), (10, 10)]
    blank = measure_adherence(lambda prompts, seeds: [Image.new("RGB", (64, 64), "gray")] * len(prompts), {1: 6})
    assert blank["1-object"]["correct"] == 0.0
