"""Settings: where models and outputs live, and which device to use.

Read from ``DREAMLOOM_*`` environment variables, so the CLI, the server and tests can
point one engine at different folders without code changes.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field


class Settings(BaseModel):
    """Every field is also ``$DREAMLOOM_<FIELD>`` and, where a command offers it, ``--field`` (help
    from the description here)."""

    models_dir: Path = Field(Path("models"), description="Models folder: diffusers folders, .safetensors files "
                                                         "(default: ./models or $DREAMLOOM_MODELS_DIR).")
    outputs_dir: Path = Field(Path("outputs"), description="Where generated images are written "
                                                           "(default: ./outputs or $DREAMLOOM_OUTPUTS_DIR).")
    device: str | None = Field(None, description="cuda, mps, xpu or cpu (default: $DREAMLOOM_DEVICE, else the best "
                                                 "available).")
    dtype: str | None = Field(None, description="float32, float16 or bfloat16 (default: $DREAMLOOM_DTYPE, else "
                                                "safe for the device).")
    allow_pickle: bool = Field(False, description="Allow .ckpt/.bin/.pt weights, which can run code when loaded "
                                                  "($DREAMLOOM_ALLOW_PICKLE).")
    allow_hub: bool = Field(False, description="Let a model name be a model-hub id (org/name), fetched when a network "
                                               "is there; off, names resolve only inside the models folder "
                                               "($DREAMLOOM_ALLOW_HUB).")

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        """``$DREAMLOOM_<FIELD>`` for every field, then ``overrides`` that are not None."""
        env = {name: os.environ.get(f"DREAMLOOM_{name.upper()}") for name in cls.model_fields}
        values = {k: v for k, v in env.items() if v}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
