"""DreamBooth training speed and memory: dreamloom's Lightning module vs a plain PyTorch loop.

Variants: full fine-tune of the UNet, full fine-tune + text encoder, LoRA (rank 4) on the
UNet's attention, each with and without gradient checkpointing; on the embedded
dreamloom-tiny-sd at 64x64, with prior preservation (batch = 1 instance + 1 class image).
The plain loop is what diffusers' ``train_dreambooth.py`` does per step (VAE encode, noise,
UNet, MSE, backward, clip, AdamW) with the same components and the same batches, so the
ratio is what Lightning and dreamloom's module add. Each run is its own process (peak RSS
is its own), twice, in the order A B B A; steps/s is the mean of the two.

    python bench/train.py            # writes bench/results/train.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

WARMUP, TIMED = 5, 30
VARIANTS = {
    "full": [],
    "full+text-encoder": ["train_text_encoder=true"],
    "lora": ["lora.enabled=true"],
}


def config(workdir: Path, extra: list[str]):
    from dreamloom.shapeworld.subjects import instance_dir
    from dreamloom.train.dreambooth.config import load_dreambooth_config

    return load_dreambooth_config(None, [
        f"instance_data_dir={instance_dir('striped-star')}", "instance_prompt=a sks star", "class_prompt=a star",
        "num_class_images=8", f"class_data_dir={workdir / 'class'}", f"output_dir={workdir / 'run'}",
        f"max_steps={WARMUP + TIMED}", f"checkpointing_steps={10 * (WARMUP + TIMED)}", "logger=none", *extra,
    ])


class StepTimer:
    """Seconds from the end of the warm-up steps to the last step."""

    def __init__(self):
        self.start = self.end = 0.0

    def mark(self, step: int) -> None:
        if step == WARMUP:
            self.start = time.perf_counter()
        if step == WARMUP + TIMED:
            self.end = time.perf_counter()

    @property
    def steps_per_s(self) -> float:
        return TIMED / (self.end - self.start)


def run_dreamloom(cfg) -> float:
    import pytorch_lightning as pl

    from dreamloom.train.dreambooth.run import DreamBoothTraining, load_base, make_trainer
    from dreamloom.train.dreambooth.data import find_examples

    base = load_base(cfg)
    module = DreamBoothTraining(cfg, base, find_examples(cfg.instance_data_dir, cfg.instance_prompt),
                                find_examples(cfg.class_dir, cfg.class_prompt), 64)
    timer = StepTimer()

    class Timing(pl.Callback):
        def on_train_batch_end(self, trainer, *_):
            timer.mark(trainer.global_step)

    trainer = make_trainer(cfg, logger=False)
    trainer.callbacks.append(Timing())
    trainer.fit(module)
    return timer.steps_per_s


def run_plain(cfg) -> float:
    """diffusers' train_dreambooth.py step, written out, over the same batches."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from peft import LoraConfig

    from dreamloom.train.dreambooth.data import DreamBoothBatches, find_examples
    from dreamloom.train.dreambooth.run import batch_recipe, load_base

    base = load_base(cfg)
    unet, vae, text_encoder, tokenizer = base.unet, base.vae, base.text_encoder, base.tokenizer
    scheduler = DDPMScheduler.from_config(base.scheduler.config)
    vae.requires_grad_(False)
    text_encoder.requires_grad_(cfg.train_text_encoder)
    if cfg.lora.enabled:
        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, init_lora_weights="gaussian",
                                    target_modules=cfg.lora.unet_target_modules))
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if cfg.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()
    unet.train()
    params = [p for m in (unet, text_encoder) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.adam_weight_decay)
    batches = DreamBoothBatches(find_examples(cfg.instance_data_dir, cfg.instance_prompt),
                                find_examples(cfg.class_dir, cfg.class_prompt),
                                lambda c: tokenizer(c, padding="max_length", max_length=tokenizer.model_max_length,
                                                    truncation=True, return_tensors="pt").input_ids,
                                batch_recipe(cfg, base, 64))
    timer = StepTimer()
    for step, batch in enumerate(batches, start=1):
        with torch.no_grad():
            latents = vae.encode(batch["pixels"]).latent_dist.mode() * vae.config.scaling_factor
        noisy = scheduler.add_noise(latents, batch["noise"], batch["timesteps"])
        v_prediction = scheduler.config.prediction_type == "v_prediction"
        target = scheduler.get_velocity(latents, batch["noise"], batch["timesteps"]) if v_prediction else batch["noise"]
        with torch.set_grad_enabled(cfg.train_text_encoder):
            hidden = text_encoder(batch["input_ids"])[0]
        prediction = unet(noisy, batch["timesteps"], hidden).sample
        per_sample = F.mse_loss(prediction, target, reduction="none").mean(dim=(1, 2, 3))
        loss = per_sample[:1].mean() + cfg.prior_loss_weight * per_sample[1:].mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        timer.mark(step)
        if step == WARMUP + TIMED:
            return timer.steps_per_s


def variant(implementation: str, name: str, checkpointing: bool, workdir: Path) -> dict:
    extra = VARIANTS[name] + [f"gradient_checkpointing={str(checkpointing).lower()}"]
    cfg = config(workdir, extra)
    steps_per_s = {"dreamloom": run_dreamloom, "plain": run_plain}[implementation](cfg)
    return {"implementation": implementation, "variant": name, "gradient_checkpointing": checkpointing,
            "steps_per_s": steps_per_s, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs=3, metavar=("IMPLEMENTATION", "VARIANT", "CHECKPOINTING"))
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.json")
    args = parser.parse_args()
    if args.one:
        implementation, name, checkpointing = args.one
        print(json.dumps(variant(implementation, name, checkpointing == "on", args.workdir)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        from dreamloom.train.dreambooth.class_images import ensure_class_images

        ensure_class_images(workdir / "class", ["a star on a white background"], 8, "dreamloom-tiny-sd")  # outside the timings
        rows = []
        for name in VARIANTS:
            for checkpointing in ("off", "on"):
                runs: dict[str, list[dict]] = {"plain": [], "dreamloom": []}
                for implementation in ("plain", "dreamloom", "dreamloom", "plain"):
                    result = subprocess.run(
                        [sys.executable, __file__, "--one", implementation, name, checkpointing, "--workdir", tmp],
                        check=True, capture_output=True, text=True)
                    runs[implementation].append(json.loads(result.stdout.strip().splitlines()[-1]))
                    for leftover in (workdir / "run").glob("**/*"):
                        if leftover.is_file():
                            leftover.unlink()
                merged = {impl: {**r[0], "steps_per_s": statistics.mean(x["steps_per_s"] for x in r),
                                 "peak_rss_mib": max(x["peak_rss_mib"] for x in r)} for impl, r in runs.items()}
                merged["dreamloom"]["speed_ratio_vs_plain"] = merged["dreamloom"]["steps_per_s"] / merged["plain"]["steps_per_s"]
                merged["dreamloom"]["rss_ratio_vs_plain"] = merged["dreamloom"]["peak_rss_mib"] / merged["plain"]["peak_rss_mib"]
                rows += [merged["plain"], merged["dreamloom"]]
                print(json.dumps(merged["dreamloom"]), flush=True)
    report = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
              "model": "dreamloom-tiny-sd", "resolution": 64, "batch": "1 instance + 1 class image",
              "timed_steps": TIMED, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
