"""The diffusers configs of the Stable Diffusion architectures a single-file checkpoint can hold.

An LDM-layout ``.safetensors`` file (what AUTOMATIC1111, SD.Next and ComfyUI load) holds
weights only. To build diffusers models around them, ``from_single_file`` needs each
component's config, which diffusers fetches from the model hub. dreamloom carries them
instead, written out below from the published diffusers repositories of SD 1.5, SD 2.1,
the inpainting models, SDXL base and SDXL inpainting, and writes them to a folder that
``from_single_file(config=...)`` reads offline.

Keys are diffusers' names for the architectures (``infer_diffusers_model_type``), so
dreamloom and diffusers never disagree about which one a file holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_SCALED_LINEAR = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                  "num_train_timesteps": 1000, "clip_sample": False, "set_alpha_to_one": False,
                  "steps_offset": 1, "trained_betas": None}

_SD_UNET = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "center_input_sample": False,
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "out_channels": 4,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-5, "norm_num_groups": 32,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}

_SD_VAE = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "layers_per_block": 2, "norm_num_groups": 32, "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
}

#: OpenAI CLIP ViT-L/14's text tower: SD 1.x's encoder and SDXL's first.
_CLIP_L = {
    "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_act": "quick_gelu",
    "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
    "projection_dim": 768, "max_position_embeddings": 77, "vocab_size": 49408, "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0, "dropout": 0.0, "initializer_factor": 1.0, "initializer_range": 0.02,
    "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}

#: OpenCLIP ViT-H/14's text tower (SD 2.x), its last layer dropped as SD 2 conditions on the penultimate.
_OPENCLIP_H = {**_CLIP_L, "hidden_act": "gelu", "hidden_size": 1024, "intermediate_size": 4096,
               "num_attention_heads": 16, "num_hidden_layers": 23, "projection_dim": 512}

#: OpenCLIP ViT-bigG/14's text tower with its projection (SDXL's second encoder).
_OPENCLIP_BIGG = {**_CLIP_L, "architectures": ["CLIPTextModelWithProjection"], "hidden_act": "gelu",
                  "hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20,
                  "num_hidden_layers": 32, "projection_dim": 1280}


_SDXL_UNET = {
    **_SD_UNET, "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280],
    "cross_attention_dim": 2048, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "projection_class_embeddings_input_dim": 2816, "sample_size": 128, "transformer_layers_per_block": [1, 2, 10],
    "use_linear_projection": True,
}
_SDXL_VAE = {**_SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
_SDXL_SCHEDULER = {"_class_name": "EulerDiscreteScheduler", **_SCALED_LINEAR, "interpolation_type": "linear",
                   "prediction_type": "epsilon", "timestep_spacing": "leading", "use_karras_sigmas": False}


def _sd(pipeline: str, unet: dict, vae_size: int, text_encoder: dict, scheduler: dict) -> dict:
    return {
        "model_index.json": {"_class_name": pipeline, "safety_checker": [None, None],
                             "feature_extractor": [None, None], "requires_safety_checker": False,
                             "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", "UNet2DConditionModel"],
                             "text_encoder": ["transformers", "CLIPTextModel"],
                             "tokenizer": ["transformers", "CLIPTokenizer"],
                             "scheduler": ["diffusers", scheduler["_class_name"]]},
        "unet/config.json": unet,
        "vae/config.json": {**_SD_VAE, "sample_size": vae_size, "scaling_factor": 0.18215},
        "text_encoder/config.json": text_encoder,
        "scheduler/scheduler_config.json": scheduler,
    }


def _sdxl(pipeline: str, unet: dict, extra: dict[str, Any]) -> dict:
    index = {"_class_name": pipeline, "vae": ["diffusers", "AutoencoderKL"],
             "unet": ["diffusers", "UNet2DConditionModel"],
             "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
             "tokenizer_2": ["transformers", "CLIPTokenizer"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "scheduler": ["diffusers", "EulerDiscreteScheduler"], **extra}
    return {"model_index.json": index, "unet/config.json": unet, "vae/config.json": _SDXL_VAE,
            "text_encoder/config.json": _CLIP_L, "text_encoder_2/config.json": _OPENCLIP_BIGG,
            "scheduler/scheduler_config.json": _SDXL_SCHEDULER}


_V1_UNET = {**_SD_UNET, "attention_head_dim": 8, "cross_attention_dim": 768, "sample_size": 64}
_V2_UNET = {**_SD_UNET, "attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024,
            "sample_size": 96, "use_linear_projection": True}
_PNDM = {"_class_name": "PNDMScheduler", **_SCALED_LINEAR, "skip_prk_steps": True, "prediction_type": "epsilon"}
_DDIM_V = {"_class_name": "DDIMScheduler", **_SCALED_LINEAR, "prediction_type": "v_prediction"}
_DDIM_EPS = {**_DDIM_V, "prediction_type": "epsilon"}

#: diffusers' model type -> the files of a diffusers folder without weights.
ARCHITECTURES: dict[str, dict[str, dict]] = {
    "v1": _sd("StableDiffusionPipeline", _V1_UNET, 512, _CLIP_L, _PNDM),
    "inpainting": _sd("StableDiffusionInpaintPipeline", {**_V1_UNET, "in_channels": 9}, 512, _CLIP_L, _DDIM_EPS),
    "v2": _sd("StableDiffusionPipeline", _V2_UNET, 768, _OPENCLIP_H, _DDIM_V),
    "inpainting_v2": _sd("StableDiffusionInpaintPipeline", {**_V2_UNET, "in_channels": 9, "sample_size": 64}, 512,
                         _OPENCLIP_H, _DDIM_EPS),
    "xl_base": _sdxl("StableDiffusionXLPipeline", _SDXL_UNET, {"force_zeros_for_empty_prompt": True}),
    "xl_inpaint": _sdxl("StableDiffusionXLInpaintPipeline", {**_SDXL_UNET, "in_channels": 9},
                        {"force_zeros_for_empty_prompt": True, "requires_aesthetics_score": False}),
}

#: CLIP's tokenizer (OpenAI's BPE vocabulary) as each encoder was trained with it: the
#: Hugging Face repository that publishes it, and OpenCLIP's padding token where it differs.
_CLIP_L_TOKENIZER = ("openai/clip-vit-large-patch14", {})
_OPENCLIP_H_TOKENIZER = ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", {"pad_token": "!"})
_OPENCLIP_BIGG_TOKENIZER = ("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", {"pad_token": "!"})

#: diffusers' model type -> pipeline component -> (repository, tokenizer settings).
TOKENIZERS: dict[str, dict[str, tuple[str, dict]]] = {
    "v1": {"tokenizer": _CLIP_L_TOKENIZER},
    "inpainting": {"tokenizer": _CLIP_L_TOKENIZER},
    "v2": {"tokenizer": _OPENCLIP_H_TOKENIZER},
    "inpainting_v2": {"tokenizer": _OPENCLIP_H_TOKENIZER},
    "xl_base": {"tokenizer": _CLIP_L_TOKENIZER, "tokenizer_2": _OPENCLIP_BIGG_TOKENIZER},
    "xl_inpaint": {"tokenizer": _CLIP_L_TOKENIZER, "tokenizer_2": _OPENCLIP_BIGG_TOKENIZER},
}


def write_config_folder(model_type: str, folder: Path) -> Path:
    """Write the weightless diffusers folder of ``model_type`` (configs only) into ``folder``."""
    for name, content in ARCHITECTURES[model_type].items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(content, indent=2))
    return folder


def check_matches(model_type: str, shapes: dict[str, tuple[int, ...]]) -> None:
    """Raise a ValueError unless the checkpoint's UNet input convolution is that of ``model_type``.

    diffusers calls any LDM file it cannot place "v1"; a file of another size (a custom
    or tiny model) would otherwise fail deep inside the conversion with a shape error."""
    if model_type not in ARCHITECTURES:
        raise ValueError(f"no shipped config for a {model_type!r} checkpoint; dreamloom knows: {', '.join(ARCHITECTURES)}")
    unet = ARCHITECTURES[model_type]["unet/config.json"]
    expected = (unet["block_out_channels"][0], unet["in_channels"], 3, 3)
    found = shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    if found != expected:
        raise ValueError(
            f"not a Stable Diffusion {model_type} checkpoint: its UNet input convolution is {found}, "
            f"{model_type} has {expected}; save the model as a diffusers folder in the models folder instead"
        )
