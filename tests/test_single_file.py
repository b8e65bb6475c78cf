"""Real SD 1.x/2.x/XL single-file checkpoints load offline from the configs dreamloom ships."""

import json

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from dreamloom.config import Settings
from dreamloom.generate.engine import Engine
from dreamloom.generate.request import GenerationRequest
from dreamloom.models.architectures import ARCHITECTURES, write_config_folder
from dreamloom.models.export import export_single_file
from dreamloom.models.single_file import MissingTokenizer
from dreamloom.train.tiny_sd.components import build_tokenizer

#: Parameter counts of the published models (UNet, VAE, first and second text encoder).
PUBLISHED = {
    "v1": (859_520_964, 83_653_863, 123_060_480, None),
    "inpainting": (859_535_364, 83_653_863, 123_060_480, None),
    "v2": (865_910_724, 83_653_863, 340_387_840, None),
    "inpainting_v2": (865_925_124, 83_653_863, 340_387_840, None),
    "xl_base": (2_567_463_684, 83_653_863, 123_060_480, 694_659_840),
    "xl_inpaint": (2_567_478_084, 83_653_863, 123_060_480, 694_659_840),
}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("kind", sorted(ARCHITECTURES))
def test_shipped_configs_build_the_published_architectures(kind, tmp_path):
    folder = write_config_folder(kind, tmp_path)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        counts = (_count(unet), _count(vae), _count(text))
        if (folder / "text_encoder_2").exists():
            counts += (_count(CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))),)
        else:
            counts += (None,)
    assert counts == PUBLISHED[kind]
    assert json.loads((folder / "model_index.json").read_text())["_class_name"].startswith("StableDiffusion")


def test_a_checkpoint_of_unknown_size_is_refused_with_its_shapes(models_dir, tmp_path):
    folder = tmp_path / "models"
    export_single_file(models_dir / "random-sd", folder / "custom.safetensors")
    engine = Engine(Settings(models_dir=folder, device="cpu"))
    with pytest.raises(ValueError, match="not a Stable Diffusion v1 checkpoint: its UNet input convolution"):
        engine.generate(GenerationRequest(prompt="x", model="custom", steps=1))


def test_a_missing_tokenizer_is_named_with_where_to_put_it(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, str(folder / "sd15.safetensors"))
    engine = Engine(Settings(models_dir=folder, device="cpu"))
    with pytest.raises(MissingTokenizer, match=r"openai/clip-vit-large-patch14.*tokenizers/clip-vit-large-patch14"):
        engine.generate(GenerationRequest(prompt="x", model="sd15", steps=1))


@pytest.mark.slow
def test_an_sd15_sized_checkpoint_loads_offline_and_draws(tmp_path):
    """A full-size SD 1.5 layout (zero weights, float16) goes through from_single_file with
    the shipped configs and a tokenizer from the models folder: no hub, no cache."""
    source = write_config_folder("v1", tmp_path / "source")
    with torch.device("meta"):
        parts = {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(source / "unet")),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(source / "vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(source / "text_encoder")),
        }
    for name, part in parts.items():
        part = part.to_empty(device="cpu").half()
        for tensor in part.state_dict().values():
            tensor.zero_()
        part.save_pretrained(source / name)
    models = tmp_path / "models"
    export_single_file(source, models / "sd15.safetensors", half=True)
    build_tokenizer(77).save_pretrained(models / "tokenizers" / "clip-vit-large-patch14")
    del parts

    engine = Engine(Settings(models_dir=models, device="cpu"))
    result = engine.generate(GenerationRequest(prompt="a red circle", model="sd15", steps=1, width=64, height=64))
    pipeline = engine.models.get("sd15").pipeline
    assert pipeline.unet.config.block_out_channels == [320, 640, 1280, 1280]
    assert pipeline.text_encoder.config.hidden_size == 768
    assert result.images[0].size == (64, 64)
