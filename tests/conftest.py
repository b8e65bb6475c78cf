"""Shared fixtures: tiny random Stable Diffusion pipelines built in code, and engines over them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

from dreamloom.config import Settings
from dreamloom.generate.engine import Engine
from dreamloom.train.tiny_sd.components import build_noise_scheduler, build_text_encoder, build_tokenizer, build_unet, build_vae
from dreamloom.train.tiny_sd.config import TinySdConfig

TINY = {
    "text_encoder": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "vae": {"block_out_channels": [8, 8, 16, 16], "latent_channels": 4, "norm_num_groups": 4},
    "unet": {"block_out_channels": [32, 32], "cross_attention": [True, False], "attention_head_dim": 8, "layers_per_block": 1},
}


def random_pipeline(seed: int = 0, **overrides) -> StableDiffusionPipeline:
    """A seeded, untrained SD pipeline of the tiny model's architecture (64x64, f8 VAE)."""
    cfg = TinySdConfig.model_validate({**TINY, **overrides})
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(cfg.text_encoder.max_length)
    return StableDiffusionPipeline(
        vae=build_vae(cfg),
        text_encoder=build_text_encoder(cfg.text_encoder, tokenizer),
        tokenizer=tokenizer,
        unet=build_unet(cfg, latent_size=8),
        scheduler=DPMSolverMultistepScheduler.from_config(build_noise_scheduler(cfg).config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """A models folder holding one random diffusers pipeline called "random-sd"."""
    folder = tmp_path_factory.mktemp("models")
    random_pipeline().save_pretrained(folder / "random-sd", safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def engine(models_dir, tmp_path_factory) -> Engine:
    return Engine(Settings(models_dir=models_dir, outputs_dir=tmp_path_factory.mktemp("outputs"), device="cpu"))


@contextmanager
def live_server(data_dir: Path, models_dir: Path | None = None, **config) -> Iterator[str]:
    """A real dreamloom server (uvicorn) on 127.0.0.1 at a free port, in a thread of this
    process; yields its base URL and stops it (and its worker) on exit."""
    import uvicorn

    from dreamloom.serving.app import create_app
    from dreamloom.serving.config import ServerConfig

    settings = Settings(models_dir=models_dir or data_dir / "models", outputs_dir=data_dir / "outputs", device="cpu")
    app = create_app(ServerConfig(data_dir=data_dir, **config), settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


@pytest.fixture
def server(tmp_path, models_dir) -> Iterator[str]:
    """A live server with default settings over the embedded models and ``random-sd``."""
    with live_server(tmp_path / "server", models_dir) as url:
        yield url
