"""Vision model speed: latency and tokens/s of captions and questions (VQA) on the local
tiny model, over held-out ShapeWorld images, through dreamloom's ``LocalBackend`` (what
the CLI and the server run). One request at a time, greedy, after a warm-up; per request:
wall time, and the tokens read and written. Also the streaming time to first token.

    python bench/vision.py                  # writes bench/results/vision.json
    python bench/vision.py --images 20 --threads 2

The model is the shipped dreamloom-tiny-vlm; ``--model`` takes another name or folder.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from dreamloom.config import Settings
from dreamloom.shapeworld import render, sample_scenes
from dreamloom.vision.backends import GenerationOptions
from dreamloom.vision.messages import Message
from dreamloom.vision.prompts import CAPTION_PROMPT
from dreamloom.vision.service import VisionConfig, open_backend

RESULTS = Path(__file__).parent / "results" / "vision.json"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(latencies: list[float], prompt_tokens: list[int], completion_tokens: list[int]) -> dict:
    total = sum(latencies)
    return {
        "requests": len(latencies),
        "latency_ms": {"p50": 1000 * statistics.median(latencies), "p95": 1000 * _percentile(latencies, 0.95),
                       "mean": 1000 * total / len(latencies)},
        "prompt_tokens_mean": statistics.mean(prompt_tokens),
        "completion_tokens_mean": statistics.mean(completion_tokens),
        "completion_tokens_per_s": sum(completion_tokens) / total,
        "requests_per_s": len(latencies) / total,
    }


def measure(backend, images: list, question_of) -> dict:
    """Latency and token counts of one ``complete`` per image, asking ``question_of(i)``."""
    latencies, read, written = [], [], []
    for i, image in enumerate(images):
        messages = [Message("user", [image, question_of(i)])]
        start = time.perf_counter()
        completion = backend.complete(messages)
        latencies.append(time.perf_counter() - start)
        read.append(completion.prompt_tokens)
        written.append(completion.completion_tokens)
    return _summary(latencies, read, written)


def first_token(backend, images: list) -> dict:
    """Streaming: time until the first piece of text, and until the whole answer."""
    firsts, wholes = [], []
    for image in images:
        start = time.perf_counter()
        stream = backend.stream([Message("user", [image, CAPTION_PROMPT])])
        pieces = iter(stream)
        next(pieces, None)
        firsts.append(time.perf_counter() - start)
        for _ in pieces:
            pass
        wholes.append(time.perf_counter() - start)
    return {"first_token_ms_p50": 1000 * statistics.median(firsts), "whole_ms_p50": 1000 * statistics.median(wholes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="Vision model name or folder (default: dreamloom-tiny-vlm).")
    parser.add_argument("--images", type=int, default=40, help="Held-out ShapeWorld images per measurement.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads.")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config = VisionConfig(model=args.model, max_new_tokens=args.max_new_tokens)
    backend = open_backend(config, Settings(device="cpu"), allow_paths=True)
    scenes = sample_scenes(seed=20_251, count=args.images)
    images = [render(scene) for scene in scenes]

    def question(i: int) -> str:
        return ("What colour is the background?", "How many shapes are there?",
                f"What colour is the {scenes[i].objects[0].shape}?")[i % 3]

    backend.complete([Message("user", [images[0], CAPTION_PROMPT])], GenerationOptions(max_new_tokens=4))  # warm-up

    report = {
        "model": backend.name,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": args.threads, "dtype": str(backend.model.dtype)},
        "images": args.images,
        "max_new_tokens": args.max_new_tokens,
        "caption": measure(backend, images, lambda i: CAPTION_PROMPT),
        "vqa": measure(backend, images, question),
        "caption_streaming": first_token(backend, images[: max(5, args.images // 4)]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
