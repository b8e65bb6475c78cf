"""The diffusers/PyTorch backend: ``DiffusionPipeline`` loading (safe, offline), then each
component moved to its planned device and dtype."""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline

from dreamloom.models.loading import load_pipeline
from dreamloom.models.registry import ModelEntry
from dreamloom.runtime.backend import WeightSource
from dreamloom.runtime.plan import LoadPlan


class DiffusersBackend:
    """Eager PyTorch through diffusers: the weights load at the plan's default dtype, then every
    ``torch.nn.Module`` component goes where the plan places it."""

    name = "diffusers"

    def load(self, entry: ModelEntry, plan: LoadPlan, source: WeightSource) -> DiffusionPipeline:
        if plan.backend != self.name:
            raise ValueError(f"the {self.name} backend cannot run a plan for {plan.backend!r}")
        pipeline = load_pipeline(entry, plan.default.torch_dtype, source.allow_pickle, source.known_folders,
                                 source.tokenizers_dir)
        return self.apply(pipeline, plan)

    def apply(self, pipeline: DiffusionPipeline, plan: LoadPlan) -> DiffusionPipeline:
        for name, component in pipeline.components.items():
            if isinstance(component, torch.nn.Module):
                placement = plan.placement(name)
                component.to(placement.torch_device)
                if _dtype(component) not in (None, placement.torch_dtype):  # cast only what the plan changes
                    component.to(dtype=placement.torch_dtype)
        return pipeline


def _dtype(module: torch.nn.Module) -> torch.dtype | None:
    """The dtype of a module's first floating-point parameter (None without one)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
