"""DreamBooth training: config and input errors, batches, class images, runs, exact resume, DDP.

Runs use the random tiny pipeline "random-sd" from conftest (seconds per run) and real
processes where the behaviour is about processes (a kill, two DDP workers, the CLI).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image
from safetensors.torch import load_file

from dreamloom.config import Settings
from dreamloom.generate.engine import Engine
from dreamloom.generate.request import GenerationRequest
from dreamloom.shapeworld import Scene, ShapeObject, render
from dreamloom.train.dreambooth.class_images import class_prompts, ensure_class_images
from dreamloom.train.dreambooth.config import load_dreambooth_config
from dreamloom.train.dreambooth.data import BatchRecipe, DreamBoothBatches, find_examples
from dreamloom.train.dreambooth.run import run_dreambooth


@pytest.fixture(scope="module")
def instance_dir(tmp_path_factory) -> Path:
    """Four images of one purple star, at different places and on different backgrounds."""
    folder = tmp_path_factory.mktemp("instances")
    for i, (x, y, bg) in enumerate([(20, 20, "white"), (40, 30, "green"), (30, 44, "black"), (44, 44, "blue")]):
        render(Scene((ShapeObject("star", "purple", "large", x, y),), bg)).save(folder / f"{i}.png")
    return folder


def config_args(instance_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [f"instance_data_dir={instance_dir}", "instance_prompt=a sks star", "class_prompt=a star",
            "base_model=random-sd", "num_class_images=4", "class_image_steps=2", f"output_dir={output_dir}",
            "max_steps=4", "checkpointing_steps=2", "loss_every=1", "learning_rate=1e-4", *extra]


def dreamloom(*args: str, models_dir: Path, threads: int | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "DREAMLOOM_MODELS_DIR": str(models_dir)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # one thread: bit-for-bit repeatable CPU arithmetic
    return subprocess.Popen([sys.executable, "-m", "dreamloom", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def losses(output_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (output_dir / "loss.jsonl").read_text().splitlines()]


def unet_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(output_dir / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")


# --- config and inputs -------------------------------------------------------------------

def test_config_file_then_overrides(tmp_path, instance_dir):
    path = tmp_path / "run.yaml"
    path.write_text(f"instance_data_dir: {instance_dir}\ninstance_prompt: a sks star\nclass_prompt: a star\n"
                    "max_steps: 50\nlora: {enabled: true, rank: 8}\n")
    cfg = load_dreambooth_config(path, ["max_steps=7", "lora.alpha=16"])
    assert (cfg.max_steps, cfg.lora.enabled, cfg.lora.rank, cfg.lora.alpha) == (7, True, 8, 16.0)
    assert cfg.resolved_class_noun == "star" and cfg.class_dir == cfg.output_dir / "class_images"


@pytest.mark.parametrize("overrides, message", [
    (["lora.rnak=4"], "lora.rnak: unknown config key"),
    (["lora.rank=0"], "lora.rank: Input should be greater than 0"),
    (["instance_prompt=a sks thing"], "does not contain the class noun 'star'"),
    (["class_prompt=null"], "with_prior_preservation needs a class_prompt"),
    (["mixed_precision=fp8"], "mixed_precision"),
])
def test_bad_config_is_one_clear_error(instance_dir, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        load_dreambooth_config(None, config_args(instance_dir, tmp_path) + overrides)


def test_without_prior_preservation_no_class_noun_is_needed(instance_dir, tmp_path):
    cfg = load_dreambooth_config(None, config_args(instance_dir, tmp_path) + ["instance_prompt=a sks thing",
                                                                              "with_prior_preservation=false"])
    assert cfg.instance_prompt == "a sks thing"


def test_a_missing_optional_logger_is_named_before_any_work(instance_dir, tmp_path):
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    cfg = load_dreambooth_config(None, config_args(instance_dir, tmp_path / "out") + ["logger=wandb"])
    with pytest.raises(ValueError, match=r"logger=wandb needs wandb: pip install 'dreamloom\[wandb\]'"):
        run_dreambooth(cfg)
    assert not (tmp_path / "out").exists()


def test_missing_empty_and_unreadable_instance_folders_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such image folder"):
        find_examples(tmp_path / "nowhere", "a sks star")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="holds no images"):
        find_examples(tmp_path / "empty", "a sks star")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*a\.png"):
        find_examples(tmp_path / "broken", "a sks star")


def test_kohya_caption_files_are_used(tmp_path, instance_dir):
    for image in instance_dir.glob("*.png"):
        (tmp_path / image.name).write_bytes(image.read_bytes())
    (tmp_path / "1.txt").write_text("a sks star on a green background\n")
    examples = {e.path.name: e.caption for e in find_examples(tmp_path, "a sks star")}
    assert examples == {"0.png": "a sks star", "1.png": "a sks star on a green background",
                        "2.png": "a sks star", "3.png": "a sks star"}


def test_cli_bad_input_exits_2_with_one_line_before_training(models_dir, tmp_path, instance_dir):
    code, out, err = finish(dreamloom("train", "dreambooth", *config_args(tmp_path / "missing", tmp_path / "out"),
                                      models_dir=models_dir))
    assert code == 2 and err.strip().startswith("error: no such image folder") and len(err.strip().splitlines()) == 1
    code, _, err = finish(dreamloom("train", "dreambooth", *config_args(instance_dir, tmp_path / "out"),
                                    "use_8bit_adam=true", models_dir=models_dir))
    assert code == 2 and "use_8bit_adam needs" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "class_images").exists()  # refused before any work


# --- batches -------------------------------------------------------------------------------

def test_batches_are_a_function_of_seed_rank_and_index(instance_dir):
    examples = find_examples(instance_dir, "a sks star")
    classes = find_examples(instance_dir, "a star")
    recipe = BatchRecipe(batch_size=2, resolution=32, center_crop=False, random_flip=True, latent_shape=(4, 4, 4),
                         num_train_timesteps=1000, offset_noise=0.1, seed=3)

    def tokenize(captions):
        return torch.tensor([[len(c)] for c in captions])

    stream = iter(DreamBoothBatches(examples, classes, tokenize, recipe))
    first = [next(stream) for _ in range(4)]
    resumed = next(iter(DreamBoothBatches(examples, classes, tokenize, recipe, start=2)))
    for key in ("pixels", "noise", "timesteps", "input_ids"):
        assert torch.equal(first[2][key], resumed[key])
    other_rank = DreamBoothBatches(examples, classes, tokenize, recipe, rank=1).batch(0)
    assert not torch.equal(first[0]["noise"], other_rank["noise"])
    assert first[0]["pixels"].shape == (4, 3, 32, 32) and first[0]["noise"].shape == (4, 4, 4, 4)
    assert first[0]["input_ids"][:2].tolist() == [[10], [10]] and first[0]["input_ids"][2:].tolist() == [[6], [6]]
    # an epoch of 4 instances over 2 batches of 2 shows each instance once
    seen = {tuple(b["pixels"][i].mean(dim=(1, 2)).round(decimals=2).tolist()) for b in first[:2] for i in range(2)}
    assert len(seen) == 4


# --- class images --------------------------------------------------------------------------

def test_missing_class_images_are_generated_with_fixed_seeds_and_reused(models_dir, tmp_path):
    settings = Settings(models_dir=models_dir, device="cpu")
    folder = tmp_path / "class"
    prompts = ["a star on a green background", "a star on a red background"]
    assert ensure_class_images(folder, prompts, 3, "random-sd", steps=2, settings=settings) == 3
    assert ensure_class_images(folder, prompts, 5, "random-sd", steps=2, settings=settings) == 2
    assert ensure_class_images(folder, prompts, 5, "random-sd", steps=2, settings=settings) == 0
    examples = find_examples(folder, "unused")
    assert [e.caption for e in examples] == [prompts[i % 2] for i in range(5)]  # each image's prompt beside it
    expected = Engine(settings).generate(GenerationRequest(prompt=prompts[0], model="random-sd", seed=4, steps=2)).images[0]
    assert np.array_equal(np.asarray(Image.open(examples[4].path).convert("RGB")), np.asarray(expected))


def test_class_prompts_follow_the_instance_captions_without_the_identifier(tmp_path, instance_dir):
    assert class_prompts(find_examples(instance_dir, "a sks star"), "a sks star", "a star") == ["a star"]
    for image in instance_dir.glob("*.png"):
        (tmp_path / image.name).write_bytes(image.read_bytes())
    (tmp_path / "0.txt").write_text("a sks star on a white background")
    (tmp_path / "1.txt").write_text("a large sks star on a green background")
    prompts = class_prompts(find_examples(tmp_path, "a sks star"), "a sks star", "a star")
    assert prompts == ["a large star on a green background", "a star", "a star on a white background"]


# --- whole runs ----------------------------------------------------------------------------

def test_full_fine_tune_from_the_cli(models_dir, tmp_path, instance_dir):
    out = tmp_path / "run"
    code, stdout, err = finish(dreamloom(
        "train", "dreambooth", *config_args(instance_dir, out), "validation.prompts=[a sks star on a white background]",
        "validation.every=2", "validation.num_images=2", "validation.steps=2", "save_single_file=true",
        models_dir=models_dir))
    assert code == 0, err
    for name in ("pipeline", "checkpoints", "loss curve", "sample grids", "TensorBoard logs", "single file"):
        assert name in stdout
    assert len(list((out / "class_images").glob("*.png"))) == 4
    assert [p.name for p in sorted((out / "samples").iterdir())] == ["step-000002.png", "step-000004.png"]
    assert Image.open(out / "samples" / "step-000004.png").size == (2 * 64, 64)
    assert (out / "loss.png").stat().st_size > 1000 and len(losses(out)) == 4
    events = list((out / "logs").rglob("events.out.tfevents.*"))
    assert events and b"validation" in events[0].read_bytes()
    assert (out / "model.safetensors").exists()
    trained = StableDiffusionPipeline.from_pretrained(out / "pipeline")
    base = StableDiffusionPipeline.from_pretrained(models_dir / "random-sd")
    changed = [not torch.equal(a, b) for a, b in zip(trained.unet.parameters(), base.unet.parameters())]
    assert all(changed)
    assert all(torch.equal(a, b) for a, b in zip(trained.vae.parameters(), base.vae.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(trained.text_encoder.parameters(), base.text_encoder.parameters()))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["processes"] == 1 and summary["peak_rss_mb"] > 0
    # checkpoints keep only what trains, and the newest K of them
    code, _, err = finish(dreamloom("train", "dreambooth", *config_args(instance_dir, out), models_dir=models_dir))
    assert code == 2 and "--resume latest" in err


def test_text_encoder_training_with_the_memory_and_loss_options(models_dir, tmp_path, instance_dir):
    out = tmp_path / "run"
    cfg = load_dreambooth_config(None, config_args(instance_dir, out) + [
        "train_text_encoder=true", "gradient_checkpointing=true", "mixed_precision=bf16-mixed", "offset_noise=0.1",
        "snr_gamma=5", "scale_lr=true", "lr_scheduler=cosine", "lr_warmup_steps=1", "gradient_accumulation_steps=2",
        "checkpoints_total_limit=1", "random_flip=true", "center_crop=false", "logger=none"])
    os.environ["DREAMLOOM_MODELS_DIR"] = str(models_dir)
    try:
        result = run_dreambooth(cfg)
    finally:
        del os.environ["DREAMLOOM_MODELS_DIR"]
    assert result.steps == 4 and len(losses(out)) == 4  # one point per optimizer step, not per micro-batch
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step=000004.ckpt"]
    state = torch.load(out / "checkpoints" / "step=000004.ckpt", weights_only=False)
    assert not any(k.startswith("vae.") for k in state["state_dict"])  # the frozen VAE is not stored
    trained = StableDiffusionPipeline.from_pretrained(out / "pipeline")
    base = StableDiffusionPipeline.from_pretrained(models_dir / "random-sd")
    assert not torch.equal(trained.text_encoder.final_layer_norm.weight, base.text_encoder.final_layer_norm.weight)


@pytest.mark.slow
def test_killed_run_resumes_exactly(models_dir, tmp_path, instance_dir):
    """A run of 6 steps, and the same run killed (SIGKILL) after its first checkpoint and
    resumed with --resume latest, give the same loss curve and the same weights."""
    settings = ["max_steps=6", "checkpointing_steps=2", "learning_rate=1e-3"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    code, _, err = finish(dreamloom("train", "dreambooth", *config_args(instance_dir, whole), *settings, models_dir=models_dir, threads=1))
    assert code == 0, err
    (cut / "class_images").mkdir(parents=True)  # the same class images: generation is not what is tested here
    for image in (whole / "class_images").iterdir():
        (cut / "class_images" / image.name).write_bytes(image.read_bytes())
    victim = dreamloom("train", "dreambooth", *config_args(instance_dir, cut), *settings, models_dir=models_dir, threads=1)
    deadline = time.time() + 300
    while not list((cut / "checkpoints").glob("*.ckpt")) and time.time() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL and not (cut / "pipeline").exists()
    code, _, err = finish(dreamloom("train", "dreambooth", *config_args(instance_dir, cut), *settings, "--resume", "latest",
                                    models_dir=models_dir, threads=1))
    assert code == 0, err
    assert losses(cut) == losses(whole) and len(losses(whole)) == 6
    a, b = unet_weights(whole), unet_weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_ddp_processes_on_cpu(models_dir, tmp_path, instance_dir):
    out = tmp_path / "ddp"
    code, stdout, err = finish(dreamloom(
        "train", "dreambooth", *config_args(instance_dir, out), "accelerator=cpu", "devices=2", "strategy=ddp",
        models_dir=models_dir))
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["processes"] == 2
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in err and "distributed_backend=gloo" in err
    assert stdout.count("DreamBooth:") == 1  # rank 0 reports once
    assert len(losses(out)) == 4 and (out / "pipeline" / "model_index.json").exists()


def test_lora_run_writes_files_that_diffusers_and_the_engine_load(models_dir, tmp_path, instance_dir):
    out = tmp_path / "star-lora"
    cfg = load_dreambooth_config(None, config_args(instance_dir, out) + [
        "lora.enabled=true", "lora.rank=4", "train_text_encoder=true", "learning_rate=1e-2", "logger=none",
        "lora.unet_target_modules=[to_k,to_q,to_v,to_out.0,conv1,conv2]"])  # LoCon: convolutions too
    os.environ["DREAMLOOM_MODELS_DIR"] = str(models_dir)
    try:
        result = run_dreambooth(cfg)
    finally:
        del os.environ["DREAMLOOM_MODELS_DIR"]
    folder = out / "star-lora"
    assert result.outputs["LoRA (diffusers)"] == folder / "pytorch_lora_weights.safetensors"
    assert result.outputs["LoRA (kohya / AUTOMATIC1111)"] == folder / "star-lora.safetensors"
    state = torch.load(out / "checkpoints" / "step=000004.ckpt", weights_only=False)["state_dict"]
    assert state and all("lora" in key for key in state)  # a LoRA checkpoint holds the adapters only
    kohya = load_file(folder / "star-lora.safetensors")
    assert any(k.startswith("lora_unet_") for k in kohya) and any(k.startswith("lora_te_") for k in kohya)

    def draw(pipeline):
        return np.asarray(pipeline("a sks star", num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                                   output_type="np").images[0])

    base = StableDiffusionPipeline.from_pretrained(models_dir / "random-sd")
    base.set_progress_bar_config(disable=True)
    plain = draw(base)
    base.load_lora_weights(folder)
    with_diffusers_file = draw(base)
    base.unload_lora_weights()
    base.load_lora_weights(folder / "star-lora.safetensors")
    with_kohya_file = draw(base)
    assert np.abs(with_diffusers_file - plain).max() > 1e-3
    assert np.abs(with_kohya_file - with_diffusers_file).max() < 1e-4

    (models_dir / "Lora").mkdir(exist_ok=True)
    (models_dir / "Lora" / "star-lora.safetensors").write_bytes((folder / "star-lora.safetensors").read_bytes())
    engine = Engine(Settings(models_dir=models_dir, device="cpu"))
    request = dict(model="random-sd", seed=0, steps=3, sampler="Euler")
    off = engine.generate(GenerationRequest(prompt="a sks star", **request)).images[0]
    on = engine.generate(GenerationRequest(prompt="a sks star <lora:star-lora:1>", **request)).images[0]
    half = engine.generate(GenerationRequest(prompt="a sks star <lora:star-lora:0.5>", **request)).images[0]
    distance = lambda a, b: np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).mean()  # noqa: E731
    assert distance(on, off) > 1 and 0 < distance(half, off) < distance(on, off)
