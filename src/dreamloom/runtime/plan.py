"""The load plan: the one place that decides device, dtype and placement for every component.

Today every component sits on one device at one dtype, chosen as ``models.device`` chooses
them (the fastest device, a precision safe there). A plan may set a component apart
(``components={"text_encoder": Placement(device="cpu", dtype="bfloat16")}``); offload,
quantization and other backends are decided here when they come, so ``describe()`` and
``model_dump()`` show a deployment's whole decision.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from dreamloom.config import Settings
from dreamloom.models.device import pick_device, pick_dtype

DType = Literal["float32", "float16", "bfloat16"]


def dtype_name(dtype: torch.dtype) -> DType:
    """``torch.float16`` -> ``"float16"``."""
    return str(dtype).removeprefix("torch.")  # type: ignore[return-value]


class Placement(BaseModel):
    """Where one component's weights live and run, and at which precision."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: str = Field(..., description="torch device: cpu, cuda, cuda:1, mps, xpu.")
    dtype: DType = Field(..., description="Precision of the weights.")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def __str__(self) -> str:
        return f"{self.device} {self.dtype}"


class LoadPlan(BaseModel):
    """How a pipeline's components are loaded: by which backend, and each one's placement
    (``default`` for every component ``components`` does not name)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["diffusers"] = Field("diffusers", description="What loads and runs the weights.")
    default: Placement = Field(..., description="Placement of every component not named in components.")
    components: dict[str, Placement] = Field(default_factory=dict,
                                             description="Per-component placements: unet, vae, text_encoder, ...")

    @classmethod
    def from_settings(cls, settings: Settings) -> LoadPlan:
        """Everything on the configured device (default: the best available) at its dtype (default:
        float16 on CUDA/MPS, bfloat16 on XPU, float32 on CPU)."""
        device = pick_device(settings.device)
        return cls(default=Placement(device=str(device), dtype=dtype_name(pick_dtype(device, settings.dtype))))

    def placement(self, component: str) -> Placement:
        return self.components.get(component, self.default)

    def describe(self, components: Iterable[str] = ()) -> str:
        """One line per component (those given, then any the plan names), for logs and ``--help``-style
        inspection: ``unet: cuda float16``."""
        names = [*components, *(n for n in self.components if n not in components)]
        lines = [f"backend: {self.backend}", f"default: {self.default}"]
        lines += [f"{name}: {self.placement(name)}" for name in names]
        return "\n".join(lines)
