"""Vision model speed on the local tiny model, over held-out ShapeWorld images, in one run:

1. dreamloom's ``LocalBackend`` (what the CLI and the server run) against the plain library
   doing the same work: transformers' ``Llama4ForConditionalGeneration.generate`` on the
   processor's chat template, greedy, same images, questions and ``max_new_tokens``. Per
   request: latency, tokens read and written, and whether both wrote the same text. The
   two alternate request by request (A B, then B A), so drift on a shared machine falls
   on both alike. Also the streaming time to first token of the backend.
2. The shipped mixture-of-experts model against a dense Llama 4 of about the same
   parameters active per token (all layers dense, one MLP width chosen to match; the same
   vision encoder configuration), and as a control a dense one of its total parameters,
   all generating exactly the same number of caption tokens. The dense models have random
   weights: they measure speed, not quality.

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
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from transformers import Llama4Config, Llama4ForConditionalGeneration, ProcessorMixin

from dreamloom.config import Settings
from dreamloom.shapeworld import render, sample_scenes
from dreamloom.vision.backends import GenerationOptions, VisionBackend
from dreamloom.vision.messages import Message
from dreamloom.vision.processor import load_processor  # also repairs Llama 4's forward on transformers 5.24
from dreamloom.vision.prompts import CAPTION_PROMPT
from dreamloom.vision.registry import DEFAULT_VISION_MODEL, resolve_vision_model
from dreamloom.vision.service import VisionConfig, open_backend
from dreamloom.vision.tiny_vlm.experts import parameter_counts

RESULTS = Path(__file__).parent / "results" / "vision.json"
DENSE_NOTE = ("The dense models are untrained (random weights): this compares speed only, not quality. A trained "
              "dense twin would take another ~37 min of training on this machine and was not trained.")

#: One request's outcome: seconds, tokens read, tokens written, text.
Outcome = tuple[float, int, int, str]


# --- statistics ---------------------------------------------------------------------------------

def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(outcomes: list[Outcome]) -> dict:
    """Latency percentiles and token rates of ``outcomes``."""
    latencies = [o[0] for o in outcomes]
    total = sum(latencies)
    return {
        "requests": len(outcomes),
        "latency_ms": {"p50": 1000 * statistics.median(latencies), "p95": 1000 * _percentile(latencies, 0.95),
                       "mean": 1000 * total / len(latencies)},
        "prompt_tokens_mean": statistics.mean(o[1] for o in outcomes),
        "completion_tokens_mean": statistics.mean(o[2] for o in outcomes),
        "completion_tokens_per_s": sum(o[2] for o in outcomes) / total,
        "requests_per_s": len(outcomes) / total,
    }


# --- the two ways of answering ------------------------------------------------------------------

def ask_dreamloom(backend: VisionBackend, image: Image.Image, question: str) -> Outcome:
    """One ``complete`` through dreamloom's backend, as the CLI and the server call it."""
    start = time.perf_counter()
    completion = backend.complete([Message("user", [image, question])])
    return time.perf_counter() - start, completion.prompt_tokens, completion.completion_tokens, completion.text


def ask_plain(model: Llama4ForConditionalGeneration, processor: ProcessorMixin, image: Image.Image, question: str,
              max_new_tokens: int) -> Outcome:
    """The same question through transformers alone, as its documentation (and the model card)
    shows it: the processor's chat template tokenized in one call, then greedy ``generate``.
    Timed from the chat to the decoded text, as the backend's ``complete`` is."""
    start = time.perf_counter()
    chat = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]
    inputs = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = output[0, inputs["input_ids"].shape[1]:]
    text = processor.decode(new, skip_special_tokens=True).strip()
    return time.perf_counter() - start, inputs["input_ids"].shape[1], len(new), text


def side_by_side(backend: VisionBackend, model: Llama4ForConditionalGeneration, processor: ProcessorMixin,
                 images: list[Image.Image], question_of: Callable[[int], str], max_new_tokens: int) -> dict:
    """Each image asked ``question_of(i)`` by both, alternating which goes first; latencies,
    their ratio (dreamloom / plain: the backend's overhead) and the share of identical answers."""
    outcomes: dict[str, list[Outcome]] = {"dreamloom": [], "transformers": []}
    for i, image in enumerate(images):
        for who in (("dreamloom", "transformers") if i % 2 == 0 else ("transformers", "dreamloom")):
            outcomes[who].append(ask_dreamloom(backend, image, question_of(i)) if who == "dreamloom"
                                 else ask_plain(model, processor, image, question_of(i), max_new_tokens))
    ours, plain = outcomes["dreamloom"], outcomes["transformers"]
    a, b = summary(ours), summary(plain)
    return {
        "dreamloom": a,
        "transformers": b,
        "latency_ratio_p50": a["latency_ms"]["p50"] / b["latency_ms"]["p50"],
        "latency_ratio_mean": a["latency_ms"]["mean"] / b["latency_ms"]["mean"],
        "same_text": sum(x[3] == y[3] for x, y in zip(ours, plain)) / len(ours),
        "same_prompt_tokens": sum(x[1] == y[1] for x, y in zip(ours, plain)) / len(ours),
        "examples": [{"dreamloom": x[3], "transformers": y[3]} for x, y in list(zip(ours, plain))[:3]],
    }


def first_token(backend: VisionBackend, images: list[Image.Image]) -> dict:
    """Streaming: time until the first piece of text, and until the whole answer."""
    firsts, wholes = [], []
    for image in images:
        start = time.perf_counter()
        pieces = iter(backend.stream([Message("user", [image, CAPTION_PROMPT])]))
        next(pieces, None)
        firsts.append(time.perf_counter() - start)
        for _ in pieces:
            pass
        wholes.append(time.perf_counter() - start)
    return {"first_token_ms_p50": 1000 * statistics.median(firsts), "whole_ms_p50": 1000 * statistics.median(wholes)}


# --- mixture of experts vs dense ----------------------------------------------------------------

def dense_config(moe: Llama4Config, mlp_width: int) -> Llama4Config:
    """``moe`` with every decoder layer dense, of MLP width ``mlp_width``; vision part unchanged."""
    raw = moe.to_dict()
    raw["text_config"].update(moe_layers=[], intermediate_size_mlp=mlp_width)
    return Llama4Config(**{k: v for k, v in raw.items() if k not in ("architectures", "transformers_version")})


def _parameters(config: Llama4Config) -> int:
    """All parameters of a model built from ``config`` (dense: all active per token)."""
    return sum(p.numel() for p in Llama4ForConditionalGeneration(config).parameters())


def dense_twin(moe: Llama4ForConditionalGeneration, parameters: int) -> Llama4ForConditionalGeneration:
    """A dense Llama 4 like ``moe`` with random weights and about ``parameters`` parameters.

    Parameters grow linearly with the one MLP width of a dense Llama 4, so two tiny builds
    give the line, and the width is where it meets ``parameters``."""
    at_1, at_2 = _parameters(dense_config(moe.config, 1)), _parameters(dense_config(moe.config, 2))
    width = round(1 + (parameters - at_1) / (at_2 - at_1))
    torch.manual_seed(0)
    model = Llama4ForConditionalGeneration(dense_config(moe.config, width)).eval()
    model.generation_config = moe.generation_config
    return model


def _timed_generate(model: Llama4ForConditionalGeneration, inputs, new_tokens: int) -> float:
    """Seconds for ``generate`` to write exactly ``new_tokens`` tokens (end of text suppressed)."""
    start = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    elapsed = time.perf_counter() - start
    assert output.shape[1] - inputs["input_ids"].shape[1] == new_tokens
    return elapsed


def _timings(model: Llama4ForConditionalGeneration, whole: list[float], prefill: list[float], new_tokens: int) -> dict:
    """A model's sizes and median times: per request, per token, prefill, and per decoded token."""
    counts = parameter_counts(model)
    whole_s, prefill_s = statistics.median(whole), statistics.median(prefill)
    return {
        "parameters_total": counts["total"], "parameters_active_per_token": counts["active_per_token"],
        "moe_layers": list(model.config.text_config.moe_layers),
        "mlp_width_dense_layers": model.config.text_config.intermediate_size_mlp,
        "request_ms_p50": 1000 * whole_s, "ms_per_token": 1000 * whole_s / new_tokens,
        "prefill_ms_p50": 1000 * prefill_s, "decode_ms_per_token": 1000 * (whole_s - prefill_s) / (new_tokens - 1),
    }


def moe_vs_dense(moe: Llama4ForConditionalGeneration, processor: ProcessorMixin, images: list[Image.Image],
                 new_tokens: int) -> dict:
    """Caption generation of exactly ``new_tokens`` tokens by the MoE model and two dense twins:
    one of its active parameters per token (the usual comparison: what a token should pay
    for) and one of its total parameters (a control: transformers' Llama 4 MoE layer
    multiplies every token by every routed expert and zeroes the unchosen ones by their
    router score, so it executes all the parameters). The models take turns starting.
    Per model: the whole request, a one-token request (prefill: the image and prompt read,
    one token out) and from the two the decoding time per token."""
    counts = parameter_counts(moe)
    models = {"moe": moe, "dense": dense_twin(moe, counts["active_per_token"]),
              "dense_equal_total": dense_twin(moe, counts["total"])}
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": CAPTION_PROMPT}]}]
    text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    batches = [processor(text=text, images=[image], return_tensors="pt", add_special_tokens=False) for image in images]
    for model in models.values():  # warm-up
        _timed_generate(model, batches[0], 2)
    names = list(models)
    times: dict[str, dict[str, list[float]]] = {name: {"whole": [], "prefill": []} for name in names}
    for i, inputs in enumerate(batches):
        for name in names[i % len(names):] + names[: i % len(names)]:
            times[name]["whole"].append(_timed_generate(models[name], inputs, new_tokens))
            times[name]["prefill"].append(_timed_generate(models[name], inputs, 1))
    report = {"note": DENSE_NOTE, "new_tokens": new_tokens, "requests": len(images),
              "prompt_tokens": int(batches[0]["input_ids"].shape[1])}
    for name, model in models.items():
        report[name] = _timings(model, times[name]["whole"], times[name]["prefill"], new_tokens)
    for dense in ("dense", "dense_equal_total"):
        for key in ("ms_per_token", "decode_ms_per_token", "prefill_ms_p50"):
            report[f"{key}_ratio_moe_over_{dense}"] = report["moe"][key] / report[dense][key]
    return report


# --- the run ------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="Vision model name or folder (default: dreamloom-tiny-vlm).")
    parser.add_argument("--images", type=int, default=40, help="Held-out ShapeWorld images per measurement.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady on a shared machine).")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="Most tokens per answer; also the exact "
                                                                      "number written in the MoE vs dense part.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    settings = Settings.from_env(device="cpu")
    location = resolve_vision_model(args.model or DEFAULT_VISION_MODEL, settings.models_dir, allow_paths=True).location
    backend = open_backend(VisionConfig(model=location, max_new_tokens=args.max_new_tokens), settings, allow_paths=True)
    processor = load_processor(location)
    model = Llama4ForConditionalGeneration.from_pretrained(location).eval()
    scenes = sample_scenes(seed=20_251, count=args.images)
    images = [render(scene) for scene in scenes]

    def question(i: int) -> str:
        return ("What colour is the background?", "How many shapes are there?",
                f"What colour is the {scenes[i].objects[0].shape}?")[i % 3]

    backend.complete([Message("user", [images[0], CAPTION_PROMPT])], GenerationOptions(max_new_tokens=4))  # warm-up
    ask_plain(model, processor, images[0], CAPTION_PROMPT, 4)

    report = {
        "model": args.model or DEFAULT_VISION_MODEL,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": args.threads, "dtype": str(backend.model.dtype)},
        "images": args.images,
        "max_new_tokens": args.max_new_tokens,
        "caption": side_by_side(backend, model, processor, images, lambda i: CAPTION_PROMPT, args.max_new_tokens),
        "vqa": side_by_side(backend, model, processor, images, question, args.max_new_tokens),
        "caption_streaming": first_token(backend, images[: max(5, args.images // 4)]),
        "moe_vs_dense": moe_vs_dense(model, processor, images, args.max_new_tokens),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
