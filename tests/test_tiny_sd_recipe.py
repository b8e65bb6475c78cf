"""The tiny-SD recipe runs end to end (a few steps), resumes, and makes a plain diffusers pipeline."""

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline

from dreamloom.train.tiny_sd.components import build_tokenizer, shapeworld_words
from dreamloom.train.tiny_sd.config import load_config
from dreamloom.train.tiny_sd.recipe import run_recipe

from conftest import TINY


def test_tokenizer_keeps_every_shapeworld_word_whole_and_spells_unknown_words():
    tokenizer = build_tokenizer(32)
    for word in shapeworld_words():
        assert len(tokenizer.tokenize(word)) == 1, word
    assert len(tokenizer.tokenize("sks")) == 3
    ids = tokenizer("a small red circle", padding="max_length", max_length=32).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[5] == tokenizer.eos_token_id and len(ids) == 32


def test_config_overrides_and_strictness(tmp_path):
    cfg = load_config(None, ["unet.steps=7", "vae.block_out_channels=[8, 8]"])
    assert cfg.unet.steps == 7 and cfg.vae.block_out_channels == [8, 8]
    with pytest.raises(ValueError):
        load_config(None, ["unet.stepz=7"])


@pytest.mark.slow
def test_recipe_trains_resumes_and_writes_a_diffusers_pipeline(tmp_path):
    overrides = [f"output_dir={tmp_path}", "data.train_scenes=64", "vae.steps=2", "vae.batch_size=8",
                 "unet.steps=2", "unet.batch_size=8", "checkpoint_every=1", "eval_every=2", "eval_prompts=4"]
    overrides += [f"{part}.{k}={json.dumps(v)}" for part, values in TINY.items() for k, v in values.items()]
    overrides += ["vae.latent_channels=4"]
    cfg = load_config(None, overrides)
    folder = run_recipe(cfg)
    assert (tmp_path / "vae" / "report.json").exists()
    curve = [json.loads(line) for line in (tmp_path / "unet" / "adherence_curve.jsonl").read_text().splitlines()]
    assert curve[-1]["step"] == 2 and 0 <= curve[-1]["1-object"]["correct"] <= 1
    for chart in ("unet/adherence_curve.png", "unet/loss.png", "vae/loss.png", "vae/reconstruction_curve.png"):
        assert (tmp_path / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", chart
    pipeline = StableDiffusionPipeline.from_pretrained(folder)
    image = pipeline("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)
    # more steps continue from the checkpoint rather than starting over
    cfg = load_config(None, [*overrides, "unet.steps=3"])
    run_recipe(cfg)
    assert json.loads((tmp_path / "unet" / "adherence_curve.jsonl").read_text().splitlines()[-1])["step"] == 3


def test_edge_weighted_loss_counts_errors_at_edges_more():
    from dreamloom.train.tiny_sd.vae_stage import edge_mask, reconstruction_loss

    image = torch.full((1, 3, 16, 16), -1.0)
    image[..., 4:12, 4:12] = 1.0  # a white square on black
    edges = edge_mask(image)[0, 0]
    assert edges[0, 0] == 0 and edges[8, 8] == 0  # flat background, flat interior
    assert edges[4, 8] == 1 and edges[3, 8] == 1 and edges[2, 8] == 0  # the border, both sides
    at_edge, inside = image.clone(), image.clone()
    at_edge[..., 4, 8] -= 0.5
    inside[..., 8, 8] -= 0.5
    assert reconstruction_loss(at_edge, image, 4.0) > 4 * reconstruction_loss(inside, image, 4.0)
    assert torch.isclose(reconstruction_loss(at_edge, image, 0.0), reconstruction_loss(inside, image, 0.0))
