"""Build the tiny pipeline's parts from the recipe config, all standard diffusers/transformers classes."""

from __future__ import annotations

import string

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from dreamloom.shapeworld.vocab import BACKGROUND_COLOURS, RELATIONS, SHAPES, SIZES
from dreamloom.train.tiny_sd.config import TextEncoderConfig, TinySdConfig

_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
_EXTRA_WORDS = ("a", "an", "on", "of", "and", "background", "photo", "picture", "image")


def shapeworld_words() -> list[str]:
    words = [*BACKGROUND_COLOURS, *SHAPES, *SIZES, *(w for r in RELATIONS for w in r.split()), *_EXTRA_WORDS]
    words += [s + "s" for s in SHAPES]
    return sorted(set(words))


def build_tokenizer(max_length: int) -> CLIPTokenizer:
    """A CLIP BPE tokenizer whose merges glue every ShapeWorld word into one token.

    Every printable character, alone and word-final, is in the vocabulary, so any other
    word (a DreamBooth identifier such as "sks") still tokenizes, into characters.
    Merges are added until each known word is a single token: a greedy fixed point,
    because a merge learned for one word can split another word's chain.
    """
    chars = [c for c in string.ascii_lowercase + string.digits + string.punctuation]
    vocab: dict[str, int] = {}
    for token in (*chars, *(c + "</w>" for c in chars), *_SPECIALS):
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    words = shapeworld_words()
    while True:
        tokenizer = CLIPTokenizer(
            vocab=dict(vocab), merges=list(merges), model_max_length=max_length, pad_token="<|endoftext|>"
        )
        added = False
        for word in words:
            pieces = tokenizer.tokenize(word)
            if len(pieces) > 1:
                merges.append((pieces[0], pieces[1]))
                vocab.setdefault(pieces[0] + pieces[1], len(vocab))
                added = True
        if not added:
            return tokenizer


def build_text_encoder(cfg: TextEncoderConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        max_position_embeddings=cfg.max_length,
        projection_dim=cfg.hidden_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_vae(cfg: TinySdConfig) -> AutoencoderKL:
    levels = len(cfg.vae.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(cfg.vae.block_out_channels),
        layers_per_block=cfg.vae.layers_per_block,
        latent_channels=cfg.vae.latent_channels,
        norm_num_groups=cfg.vae.norm_num_groups,
        sample_size=cfg.data.resolution,
    )


def build_unet(cfg: TinySdConfig, latent_size: int) -> UNet2DConditionModel:
    attends = cfg.unet.cross_attention
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=cfg.vae.latent_channels,
        out_channels=cfg.vae.latent_channels,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)),
        block_out_channels=tuple(cfg.unet.block_out_channels),
        layers_per_block=cfg.unet.layers_per_block,
        cross_attention_dim=cfg.text_encoder.hidden_size,
        attention_head_dim=cfg.unet.attention_head_dim,
        norm_num_groups=32,
    )


def build_noise_scheduler(cfg: TinySdConfig) -> DDPMScheduler:
    """Stable Diffusion's training schedule (scaled-linear betas, 1000 steps)."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=cfg.unet.prediction_type,
        clip_sample=False,
        steps_offset=1,
    )
