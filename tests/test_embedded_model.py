"""The shipped dreamloom-tiny-sd: plain diffusers loads it, it draws what it is asked, it exports."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from dreamloom.config import Settings
from dreamloom.eval.prompts import held_out_scenes
from dreamloom.generate.engine import Engine
from dreamloom.generate.request import GenerationRequest
from dreamloom.models.export import export_single_file
from dreamloom.models.registry import ModelRegistry
from dreamloom.shapeworld import score_image


@pytest.fixture(scope="module")
def tiny_dir():
    return ModelRegistry(None).resolve("dreamloom-tiny-sd").path


def test_plain_diffusers_loads_and_runs_it(tiny_dir):
    pipeline = StableDiffusionPipeline.from_pretrained(tiny_dir)
    pipeline.set_progress_bar_config(disable=True)
    scenes = held_out_scenes(8, 1)
    images = pipeline([s.caption() for s in scenes], num_inference_steps=20,
                      generator=[torch.Generator().manual_seed(i) for i in range(8)]).images
    assert images[0].size == (64, 64)
    backgrounds = [score_image(im, s.caption()).background for im, s in zip(images, scenes)]
    assert sum(backgrounds) >= 6  # the prompt steers the picture, it is not noise


def test_weights_are_small_safetensors(tiny_dir):
    files = list(tiny_dir.rglob("*"))
    assert not [f for f in files if f.suffix in (".bin", ".ckpt", ".pt")]
    assert sum(f.stat().st_size for f in files if f.is_file()) < 60 * 2**20


def test_export_to_single_file_and_back_gives_the_same_images(tiny_dir, tmp_path):
    models = tmp_path / "models"
    export_single_file(tiny_dir, models / "tiny-single.safetensors")
    engine = Engine(Settings(models_dir=models, device="cpu"))
    request = GenerationRequest(prompt="a large blue star on a white background", seed=4, steps=10)
    a = np.asarray(engine.generate(request).images[0], dtype=np.int16)
    b = np.asarray(engine.generate(request.model_copy(update={"model": "tiny-single"})).images[0], dtype=np.int16)
    assert np.abs(a - b).max() <= 1


def test_readme_generate_command_uses_the_embedded_model(tmp_path):
    env = {**os.environ, "DREAMLOOM_MODELS_DIR": str(tmp_path / "none")}
    run = subprocess.run([sys.executable, "-m", "dreamloom", "generate", "a large red circle on a blue background"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    path = tmp_path / run.stdout.split()[0]
    assert path.exists() and "Model: dreamloom-tiny-sd" in path.read_bytes().decode("latin-1")


def test_eval_adherence_reports_every_attribute(tmp_path):
    out = tmp_path / "report.json"
    run = subprocess.run([sys.executable, "-m", "dreamloom", "eval", "adherence", "--prompts", "4", "--json", str(out)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert set(report["1-object"]["attributes"]) == {"background", "colour", "count", "shape", "size"}
    assert "relation" in report["2-object"]["attributes"]
    assert report["1-object"]["prompts"] == 4 and "correct" in run.stdout
