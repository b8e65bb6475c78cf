"""Settings: where models and outputs live, and which device to use.

Read from ``DREAMLOOM_*`` environment variables, so the CLI, the server and tests can
point one engine at different folders without code changes.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field


class Settings(BaseModel):
    models_dir: Path = Field(Path("models"), description="Folder scanned for models (diffusers folders, .safetensors files).")
    outputs_dir: Path = Field(Path("outputs"), description="Where generated images are written.")
    device: str | None = Field(None, description="cuda, mps, xpu or cpu; default: the best available.")
    dtype: str | None = Field(None, description="float32, float16 or bfloat16; default: safe for the device.")
    allow_pickle: bool = Field(False, description="Allow .ckpt/.bin/.pt weights, which can run code when loaded.")
    allow_hub: bool = Field(False, description="Let a model name be a model-hub id (org/name), fetched when a network "
                                               "is there; off, names resolve only inside the models folder.")

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        env = {
            "models_dir": os.environ.get("DREAMLOOM_MODELS_DIR"),
            "outputs_dir": os.environ.get("DREAMLOOM_OUTPUTS_DIR"),
            "device": os.environ.get("DREAMLOOM_DEVICE"),
            "dtype": os.environ.get("DREAMLOOM_DTYPE"),
            "allow_pickle": os.environ.get("DREAMLOOM_ALLOW_PICKLE"),
            "allow_hub": os.environ.get("DREAMLOOM_ALLOW_HUB"),
        }
        values = {k: v for k, v in env.items() if v}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
