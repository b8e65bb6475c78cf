"""AUTOMATIC1111's sampler names, mapped onto diffusers schedulers in one table.

diffusers schedulers keep per-run state (step index, model-output history), so every
request gets a fresh one built from the model's scheduler config; never share them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers.schedulers.scheduling_utils import SchedulerMixin


@dataclass(frozen=True)
class Sampler:
    """One named sampler: the scheduler class and the options that make it that sampler."""

    name: str
    scheduler_name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def scheduler(self) -> type[SchedulerMixin]:
        """The diffusers class, imported on first use: the table is read at CLI start-up and by the
        request model, and importing diffusers (and torch with it) takes seconds."""
        import diffusers

        return getattr(diffusers, self.scheduler_name)


_KARRAS = {"use_karras_sigmas": True}
_SDE = {"algorithm_type": "sde-dpmsolver++"}

SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler("Euler", "EulerDiscreteScheduler"),
        Sampler("Euler a", "EulerAncestralDiscreteScheduler"),
        Sampler("Heun", "HeunDiscreteScheduler"),
        Sampler("LMS", "LMSDiscreteScheduler"),
        Sampler("LMS Karras", "LMSDiscreteScheduler", _KARRAS),
        Sampler("DPM2", "KDPM2DiscreteScheduler"),
        Sampler("DPM2 Karras", "KDPM2DiscreteScheduler", _KARRAS),
        Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler"),
        Sampler("DPM2 a Karras", "KDPM2AncestralDiscreteScheduler", _KARRAS),
        Sampler("DPM++ 2M", "DPMSolverMultistepScheduler"),
        Sampler("DPM++ 2M Karras", "DPMSolverMultistepScheduler", _KARRAS),
        # DPM++ SDE draws Brownian noise for the whole batch: its images depend on their batch
        Sampler("DPM++ SDE", "DPMSolverSDEScheduler"),
        Sampler("DPM++ SDE Karras", "DPMSolverSDEScheduler", _KARRAS),
        Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler", _SDE),
        Sampler("DPM++ 2M SDE Karras", "DPMSolverMultistepScheduler", {**_SDE, **_KARRAS}),
        Sampler("DDIM", "DDIMScheduler"),
        Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}),
        Sampler("UniPC", "UniPCMultistepScheduler"),
    )
}

DEFAULT_SAMPLER = "DPM++ 2M Karras"

# Keys that describe the sampler rather than the model; dropped from the model's
# config so one sampler's choices never leak into another's.
_SAMPLER_KEYS = {"use_karras_sigmas", "algorithm_type", "skip_prk_steps", "solver_order", "solver_type", "lower_order_final"}


def get_sampler(name: str) -> Sampler:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}") from None


def make_scheduler(name: str, model_scheduler_config: dict[str, Any]) -> SchedulerMixin:
    """A new scheduler for sampler ``name``, keeping the model's betas and prediction type."""
    sampler = get_sampler(name)
    base = {k: v for k, v in dict(model_scheduler_config).items() if k not in _SAMPLER_KEYS}
    return sampler.scheduler.from_config(base, **sampler.options)
