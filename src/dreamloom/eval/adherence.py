"""Prompt adherence of any text-to-image function, per attribute, on held-out ShapeWorld prompts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from dreamloom.eval.prompts import held_out_scenes
from dreamloom.shapeworld import score_image

#: Takes prompts and one seed per prompt, returns one image per prompt.
GenerateFn = Callable[[list[str], list[int]], Sequence[Image.Image]]


def _attribute(check_name: str) -> str:
    return check_name.split(".")[-1]


def measure_adherence(
    generate: GenerateFn,
    counts: dict[int, int],
    batch_size: int = 50,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Generate for ``counts[n]`` held-out n-object prompts and score every image.

    ``progress(done, total)`` is called after every chunk of ``batch_size`` images.

    Returns, per group ("1-object", ...), the share of images that are fully ``correct``
    (every object's colour and shape, background, relation), the mean score, and the
    accuracy of each attribute (colour, shape, size, background, relation, count).
    """
    report: dict[str, dict] = {}
    total, done = sum(counts.values()), 0
    for n_objects, count in counts.items():
        prompts = [s.caption() for s in held_out_scenes(count, n_objects)]
        results = []
        for start in range(0, count, batch_size):
            chunk = prompts[start : start + batch_size]
            images = generate(chunk, list(range(start, start + len(chunk))))
            results += [score_image(image, prompt) for image, prompt in zip(images, chunk)]
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        per_attribute: dict[str, list[bool]] = defaultdict(list)
        for result in results:
            for name, ok in result.checks.items():
                per_attribute[_attribute(name)].append(ok)
        report[f"{n_objects}-object"] = {
            "prompts": count,
            "correct": float(np.mean([r.correct for r in results])),
            "score": float(np.mean([r.score for r in results])),
            "attributes": {name: float(np.mean(v)) for name, v in sorted(per_attribute.items())},
        }
    return report
