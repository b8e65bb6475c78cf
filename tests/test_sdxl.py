"""The engine on an SDXL-architecture pipeline (two text encoders, pooled embeddings, size conditioning)."""

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from dreamloom.config import Settings
from dreamloom.generate.engine import Engine
from dreamloom.generate.request import GenerationRequest
from dreamloom.train.tiny_sd.components import build_tokenizer


def random_sdxl() -> StableDiffusionXLPipeline:
    """A seeded tiny SDXL: the same component layout as SDXL base, at toy sizes."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=32,
    )
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, sample_size=16)
    tokenizer = build_tokenizer(32)
    config = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                  hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=3,
                  vocab_size=len(tokenizer), max_position_embeddings=32, projection_dim=32)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**config)), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**config)), tokenizer_2=tokenizer,
        unet=unet, scheduler=scheduler,
    )


@pytest.fixture(scope="module")
def xl_engine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    random_sdxl().save_pretrained(folder / "random-xl", safe_serialization=True)
    return Engine(Settings(models_dir=folder, device="cpu"))


def test_sdxl_txt2img_with_weights_and_seeds(xl_engine):
    request = GenerationRequest(prompt="a (red:1.2) circle", negative_prompt="blue", model="random-xl", steps=3, seed=2, batch_size=2)
    result = xl_engine.generate(request)
    assert [im.size for im in result.images] == [(16, 16)] * 2 and result.seeds == [2, 3]
    alone = xl_engine.generate(request.model_copy(update={"seed": 3, "batch_size": 1})).images[0]
    assert np.abs(np.asarray(alone, dtype=np.int16) - np.asarray(result.images[1], dtype=np.int16)).max() <= 2


def test_sdxl_img2img_and_inpaint(xl_engine):
    from PIL import Image

    init = Image.new("RGB", (16, 16), (10, 200, 10))
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (0, 0, 8, 16))
    out = xl_engine.generate(GenerationRequest(prompt="x", model="random-xl", steps=3, init_image=init, mask=mask, mask_blur=0)).images[0]
    assert out.getpixel((15, 8)) == (10, 200, 10)
