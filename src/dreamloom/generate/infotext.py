"""AUTOMATIC1111's "infotext": the generation parameters in a PNG's ``parameters`` chunk.

Format: the prompt, an optional "Negative prompt: ..." line, then one line of
"Key: value" pairs (values with commas are quoted). Reading it back gives a request.
LoRAs are ``<lora:name:weight>`` tags in the prompt (those of the request's ``loras``
field are appended), with their hashes in ``Lora hashes: "name: hash, ..."``.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from dreamloom import __version__
from dreamloom.generate.lora_syntax import lora_tag
from dreamloom.generate.request import GenerationRequest

_PAIR = re.compile(r'\s*([\w][\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def _quote(value: object) -> str:
    text = str(value)
    return json.dumps(text) if any(c in text for c in ',:\n"') else text


def format_infotext(
    request: GenerationRequest,
    seed: int,
    width: int,
    height: int,
    model_hash: str | None = None,
    lora_hashes: dict[str, str] | None = None,
) -> str:
    """The infotext of one image of ``request``, drawn with ``seed``; ``lora_hashes`` maps
    each LoRA name to its short hash."""
    pairs = {
        "Steps": request.steps,
        "Sampler": request.sampler,
        "CFG scale": f"{request.cfg_scale:g}",
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model hash": model_hash,
        "Model": request.model,
    }
    if request.init_image is not None:
        pairs["Denoising strength"] = f"{request.denoising_strength:g}"
    if request.mask is not None:
        pairs["Mask blur"] = request.mask_blur
    if request.clip_skip != 1:
        pairs["Clip skip"] = request.clip_skip
    if request.enhanced_from is not None:
        pairs["Enhanced from"] = request.enhanced_from
    if lora_hashes:
        pairs["Lora hashes"] = ", ".join(f"{name}: {digest}" for name, digest in lora_hashes.items())
    pairs["Version"] = f"dreamloom {__version__}"
    lines = [" ".join([request.prompt, *map(lora_tag, request.loras)])]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in pairs.items() if v is not None))
    return "\n".join(lines)


def parse_infotext(text: str) -> dict[str, str]:
    """Split an infotext into "Prompt", "Negative prompt" and its "Key: value" pairs."""
    lines = text.strip().split("\n")
    last = lines[-1] if len(lines) > 1 or "Steps: " in lines[-1] else ""
    if last:
        lines = lines[:-1]
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(line)
    fields = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _PAIR.findall(last):
        fields[key.strip()] = json.loads(value) if value.startswith('"') else value.strip()
    return fields


def request_from_infotext(text: str) -> GenerationRequest:
    """The request that reproduces an image, from its infotext."""
    fields = parse_infotext(text)
    values: dict = {"prompt": fields["Prompt"], "negative_prompt": fields["Negative prompt"]}
    simple = {"Steps": ("steps", int), "Sampler": ("sampler", str), "CFG scale": ("cfg_scale", float),
              "Seed": ("seed", int), "Model": ("model", str), "Clip skip": ("clip_skip", int),
              "Denoising strength": ("denoising_strength", float), "Mask blur": ("mask_blur", int),
              "Enhanced from": ("enhanced_from", str)}
    for key, (name, kind) in simple.items():
        if key in fields:
            values[name] = kind(fields[key])
    if "Size" in fields:
        width, height = fields["Size"].split("x")
        values["width"], values["height"] = int(width), int(height)
    return GenerationRequest(**values)


def png_bytes(image: Image.Image, infotext: str | None = None) -> bytes:
    """``image`` as PNG, carrying ``infotext`` in its ``parameters`` chunk as AUTOMATIC1111's files do."""
    info = None
    if infotext is not None:
        info = PngInfo()
        info.add_text("parameters", infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()



def read_infotext(path: Path) -> str:
    """The ``parameters`` text of a PNG written by dreamloom, AUTOMATIC1111 or SD.Next."""
    with Image.open(path) as image:
        text = image.info.get("parameters")
    if text is None:
        raise ValueError(f"{path} carries no generation parameters (no PNG 'parameters' chunk)")
    return text
