"""AUTOMATIC1111's LoRA prompt syntax: ``<lora:name:weight>`` (weight optional, 1.0).

A tag asks for a LoRA and is removed from the text before it is encoded; the infotext
keeps it, so a prompt read back from an image asks for the same LoRAs. The same
``name[:weight]`` form is the command line's ``--lora``.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError

_TAG = re.compile(r"<lora:([^>]*)>")


class LoraWeight(BaseModel):
    """One LoRA and how strongly it is applied."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="LoRA name in the models folder's Lora/ (see `dreamloom models`).")
    weight: float = Field(1.0, ge=-4.0, le=4.0, allow_inf_nan=False,
                          description="Strength: 1 as trained, 0 off, negative pushes away from what it learned.")


def parse_lora(text: str) -> LoraWeight:
    """``name`` or ``name:weight``; a ValueError in one line names what is wrong."""
    name, *weight = text.split(":")
    if len(weight) > 1:
        raise ValueError(f"LoRA {text!r}: write name or name:weight")
    try:
        return LoraWeight(name=name.strip(), weight=weight[0].strip() if weight else 1.0)
    except ValidationError as error:
        first = error.errors()[0]
        raise ValueError(f"LoRA {text!r}: {first['loc'][0]}: {first['msg']}") from None


def split_lora_tags(prompt: str) -> tuple[str, list[LoraWeight]]:
    """The prompt without its ``<lora:...>`` tags, and the LoRAs they ask for, in order."""
    return _TAG.sub("", prompt), [parse_lora(body) for body in _TAG.findall(prompt)]


def lora_tag(lora: LoraWeight) -> str:
    return f"<lora:{lora.name}:{lora.weight:g}>"


def lora_weights(prompt: str, loras: list[LoraWeight]) -> dict[str, float]:
    """Name -> weight of every LoRA a request asks for, in its field and its prompt.
    A name given twice adds up, as two copies of one LoRA do in AUTOMATIC1111."""
    weights: dict[str, float] = {}
    for lora in [*loras, *split_lora_tags(prompt)[1]]:
        weights[lora.name] = weights.get(lora.name, 0.0) + lora.weight
    return weights
