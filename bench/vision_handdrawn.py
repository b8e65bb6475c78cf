"""The vision model on shapes it never saw drawn: held-out accuracy per question kind and
part order, through the backend the CLI and the server run.

ShapeWorld's renderer (``dreamloom.shapeworld.render``) draws upright shapes of two sizes,
in flat palette colours, on a 64x64 grid. The drawing routine here is independent of it:
other canvas sizes (96-160 px), shapes of any size from a fifth to half the canvas,
rotated a little, a star of other proportions, an ellipse for a circle, colours jittered
around the palette's, sometimes a darker outline, anti-aliased by 4x supersampling and
Lanczos. Each image holds one or two shapes (two differ in shape and in colour, so every
question names one object). Questions are asked in OpenAI's message format, the question
before the image (as OpenAI clients send it) and after it, in several wordings:

    python bench/vision_handdrawn.py                           # the shipped model
    python bench/vision_handdrawn.py --model training/tiny-vlm/model --json before.json

Answers are scored by exact match (case and final punctuation aside); a description by
ShapeWorld's parser: right when it names exactly the drawn shapes with their colours
(sizes are not scored: the drawings have no "small" and "large"). An empty answer, or the
backend's refusal to return one, counts as wrong and is also counted apart.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from dreamloom.shapeworld import parse_prompt
from dreamloom.shapeworld.vocab import BACKGROUND_COLOURS, OBJECT_COLOURS, SHAPES
from dreamloom.vision.backends import GenerationOptions, VisionError
from dreamloom.vision.local import LocalBackend
from dreamloom.vision.messages import parse_messages
from dreamloom.vision.tiny_vlm.folder import embedded_vlm_path

SUPERSAMPLE = 4
ORDERS = ("image first", "text first")
NUMBERS = ("zero", "one", "two", "three")


@dataclass(frozen=True)
class Drawn:
    """One shape as drawn: its name, colour name, centre and extent (canvas pixels)."""

    shape: str
    colour: str
    cx: float
    cy: float
    extent: float


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 18) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def _polygon(shape: str, cx: float, cy: float, half: float, angle: float,
             rng: random.Random) -> list[tuple[float, float]]:
    """Vertices of a square, triangle or five-pointed star of circumradius ``half``, turned by ``angle``."""
    if shape == "square":
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        points = [(x * half * 0.8, y * half * 0.8) for x, y in corners]
    elif shape == "triangle":
        points = [(half * math.cos(a), half * math.sin(a) + half * 0.15)
                  for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    else:  # star: the inner radius varies between drawings
        inner = rng.uniform(0.36, 0.5)
        points = [(r * math.cos(a), r * math.sin(a)) for k in range(10)
                  for r, a in [((1 if k % 2 == 0 else inner) * half, -math.pi / 2 + k * math.pi / 5)]]
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def draw_image(shapes: list[Drawn], background: str, side: int, rng: random.Random) -> Image.Image:
    """``shapes`` on a ``side``-pixel canvas of ``background``, supersampled and downscaled."""
    s = SUPERSAMPLE
    image = Image.new("RGB", (side * s, side * s), _jitter(BACKGROUND_COLOURS[background], rng, 10))
    draw = ImageDraw.Draw(image)
    for obj in shapes:
        fill = _jitter(OBJECT_COLOURS[obj.colour], rng)
        outline = tuple(c // 2 for c in fill) if rng.random() < 0.3 else None
        width = rng.randint(1, 3) * s
        cx, cy, half = obj.cx * s, obj.cy * s, obj.extent * s / 2
        if obj.shape == "circle":
            squash = rng.uniform(0.9, 1.1)
            box = (cx - half, cy - half * squash, cx + half, cy + half * squash)
            draw.ellipse(box, fill=fill, outline=outline, width=width if outline else 0)
        else:
            points = _polygon(obj.shape, cx, cy, half, math.radians(rng.uniform(-12, 12)), rng)
            draw.polygon(points, fill=fill, outline=outline, width=width if outline else 0)
    return image.resize((side, side), Image.Resampling.LANCZOS)


def sample_drawing(rng: random.Random) -> tuple[Image.Image, list[Drawn]]:
    """One or two shapes (different shapes, different colours) placed apart on a random canvas."""
    side = rng.choice((96, 128, 160))
    count = 1 if rng.random() < 0.6 else 2
    shapes, colours = rng.sample(SHAPES, count), rng.sample(list(OBJECT_COLOURS), count)
    background = rng.choice([c for c in BACKGROUND_COLOURS if c not in colours])

    def place(extent: float) -> float:  # a centre keeping the whole shape 2 px inside the canvas
        return rng.uniform(extent / 2 + 2, side - extent / 2 - 2)

    while True:
        extents = [rng.uniform(0.2, 0.5 if count == 1 else 0.36) * side for _ in range(count)]
        drawn = [Drawn(shape, colour, place(e), place(e), e) for shape, colour, e in zip(shapes, colours, extents)]
        if count == 1 or math.dist((drawn[0].cx, drawn[0].cy), (drawn[1].cx, drawn[1].cy)) > sum(extents) / 2 + 4:
            return draw_image(drawn, background, side, rng), drawn


#: Wordings asked of every image ({shape}, {colour}: of each drawn shape), then of one-shape images only.
WORDINGS: tuple[tuple[str, str], ...] = (
    ("colour", "What colour is the {shape}?"), ("colour", "what color is the {shape}"),
    ("shape", "What shape is the {colour} object?"), ("shape", "WHAT SHAPE IS THE {COLOUR} OBJECT"),
    ("count", "How many shapes are there?"), ("count", "how many shapes are there"),
    ("count", "How many shapes are in the image?"),
    ("describe", "Describe the image."), ("describe", "What is in this image?"),
)
ABOUT_IT: tuple[tuple[str, str], ...] = (("colour", "What colour is it?"), ("shape", "What shape is it?"))


def questions(shapes: list[Drawn]) -> list[tuple[str, str, str, str]]:
    """(kind, wording, question, answer) for every wording that applies to ``shapes``."""
    asked = []
    wordings = WORDINGS + (ABOUT_IT if len(shapes) == 1 else ())
    for kind, wording in wordings:
        about = shapes if "{" in wording else shapes[:1]
        for obj in about:
            text = wording.format(shape=obj.shape, colour=obj.colour, COLOUR=obj.colour.upper())
            answer = {"colour": obj.colour, "shape": obj.shape, "count": NUMBERS[len(shapes)], "describe": ""}[kind]
            asked.append((kind, wording, text, answer))
    return asked


def is_right(kind: str, reply: str, answer: str, shapes: list[Drawn]) -> bool:
    if kind == "describe":
        read = Counter((o.shape, o.colour) for o in parse_prompt(reply).objects)
        return read == Counter((o.shape, o.colour) for o in shapes)
    return reply.strip().lower().rstrip(".!") == answer


def ask(backend: LocalBackend, image: Image.Image, question: str, order: str) -> str:
    """The backend's answer to an OpenAI-style user message; "" when it returns or refuses an empty one."""
    parts = [{"type": "image", "image": image}, {"type": "text", "text": question}]
    content = parts[::-1] if order == "text first" else parts
    try:
        return backend.complete(parse_messages([{"role": "user", "content": content}])).text.strip()
    except VisionError:
        return ""


def run(model: Path, images: int, seed: int) -> dict:
    backend = LocalBackend.load(model, device="cpu", options=GenerationOptions(max_new_tokens=24))
    rng = random.Random(seed)
    right: dict[str, list[bool]] = defaultdict(list)
    empty: Counter = Counter()
    wordings: dict[str, list[bool]] = defaultdict(list)
    started = time.perf_counter()
    for _ in range(images):
        image, shapes = sample_drawing(rng)
        for kind, wording, question, answer in questions(shapes):
            for order in ORDERS:
                reply = ask(backend, image, question, order)
                ok = is_right(kind, reply, answer, shapes)
                right[f"{kind} | {order}"].append(ok)
                wordings[wording].append(ok)
                empty[order] += reply == ""
    share = lambda oks: round(sum(oks) / len(oks), 4)
    return {
        "model": str(model), "images": images, "seed": seed, "seconds": round(time.perf_counter() - started),
        "accuracy": {key: share(oks) for key, oks in sorted(right.items())},
        "questions": {key: len(oks) for key, oks in sorted(right.items())},
        "by_wording": {wording: share(oks) for wording, oks in wordings.items()},
        "empty_answers": dict(empty),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=embedded_vlm_path(), help="model folder (default: shipped)")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("bench/results/vision_handdrawn.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = run(args.model, args.images, args.seed)
    print(f"{'kind':<10}{'order':<14}{'questions':>10}{'exact':>9}")
    for key, share in report["accuracy"].items():
        kind, order = key.split(" | ")
        print(f"{kind:<10}{order:<14}{report['questions'][key]:>10}{share:>9.1%}")
    for wording, share in report["by_wording"].items():
        print(f"{share:>7.1%}  {wording}")
    print(f"empty answers: {report['empty_answers']}; {report['seconds']} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
