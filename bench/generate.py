"""dreamloom vs plain diffusers doing the same txt2img work, side by side in one run.

Same model (the embedded dreamloom-tiny-sd), sampler (DPM++ 2M Karras), steps, seeds,
size and guidance; batch 1 and batch 8. Each variant runs in its own process so peak
memory (max RSS) is its own, twice, in the order A B B A; its time is the mean of the two
medians. Also reports the floor: UNet FLOPs per image divided by
this machine's measured matmul FLOP/s.

    python bench/generate.py            # writes bench/results/generate.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

PROMPT = "a large red circle left of a small blue square on a yellow background"
STEPS, CFG, SEED, REPEATS = 20, 7.0, 1234, 5


def model_dir() -> Path:
    from dreamloom.models.registry import ModelRegistry

    return ModelRegistry(None).resolve("dreamloom-tiny-sd").path


def run_diffusers(batch: int) -> tuple[list[float], np.ndarray]:
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model_dir(), safety_checker=None)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    pipe.set_progress_bar_config(disable=True)

    def once():
        generators = [torch.Generator().manual_seed(SEED + i) for i in range(batch)]
        return pipe([PROMPT] * batch, num_inference_steps=STEPS, guidance_scale=CFG, generator=generators, output_type="np").images

    return _time(once)


def run_dreamloom(batch: int) -> tuple[list[float], np.ndarray]:
    from dreamloom.config import Settings
    from dreamloom.generate.engine import Engine
    from dreamloom.generate.request import GenerationRequest

    engine = Engine(Settings(device="cpu"))
    request = GenerationRequest(prompt=PROMPT, steps=STEPS, cfg_scale=CFG, seed=SEED, batch_size=batch, sampler="DPM++ 2M Karras")

    def once():
        return np.stack([np.asarray(im, dtype=np.float32) / 255 for im in engine.generate(request).images])

    return _time(once)


def _time(fn) -> tuple[list[float], np.ndarray]:
    out = fn()  # warm-up: loading, first-call allocations
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return times, out


def variant(name: str, batch: int, out_npy: Path) -> dict:
    torch.manual_seed(0)
    times, images = {"diffusers": run_diffusers, "dreamloom": run_dreamloom}[name](batch)
    np.save(out_npy, (images * 255).round().astype(np.uint8))
    median = statistics.median(times)
    return {"variant": name, "batch": batch, "median_s": median, "images_per_s": batch / median,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def unet_flops_per_image() -> float:
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    unet = UNet2DConditionModel.from_pretrained(model_dir() / "unet")
    latents = torch.randn(2, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    context = torch.randn(2, 32, unet.config.cross_attention_dim)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(latents, torch.tensor([500, 500]), context)
    return counter.get_total_flops() * STEPS  # batch of 2 = cond + uncond for one image


def matmul_flops_per_s(n: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--npy", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "generate.json")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(variant(args.variant, args.batch, args.npy)))
        return
    rows, tmp = [], args.out.parent
    tmp.mkdir(parents=True, exist_ok=True)
    for batch in (1, 8):
        outputs, runs = {}, {"diffusers": [], "dreamloom": []}
        # A B B A: neither variant always runs first on a machine whose speed drifts
        for name in ("diffusers", "dreamloom", "dreamloom", "diffusers"):
            npy = tmp / f"{name}-{batch}.npy"
            result = subprocess.run([sys.executable, __file__, "--variant", name, "--batch", str(batch), "--npy", str(npy)],
                                    check=True, capture_output=True, text=True)
            runs[name].append(json.loads(result.stdout.strip().splitlines()[-1]))
            outputs[name] = np.load(npy).astype(np.int16)
            npy.unlink()
        for name in ("diffusers", "dreamloom"):
            median = statistics.mean(r["median_s"] for r in runs[name])
            rows.append({**runs[name][0], "median_s": median, "images_per_s": batch / median,
                         "peak_rss_mib": max(r["peak_rss_mib"] for r in runs[name])})
        diff = int(np.abs(outputs["diffusers"] - outputs["dreamloom"]).max())
        ours, theirs = rows[-1], rows[-2]
        ours["max_pixel_diff_vs_diffusers"] = diff
        ours["time_ratio_vs_diffusers"] = ours["median_s"] / theirs["median_s"]
        ours["peak_rss_ratio_vs_diffusers"] = ours["peak_rss_mib"] / theirs["peak_rss_mib"]
    flops = unet_flops_per_image()
    rate = matmul_flops_per_s()
    report = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
              "steps": STEPS, "cfg_scale": CFG, "rows": rows,
              "unet_gflops_per_image": flops / 1e9, "matmul_gflops_per_s": rate / 1e9,
              "floor_s_per_image": flops / rate}
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
